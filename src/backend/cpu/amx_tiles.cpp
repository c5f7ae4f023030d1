// AMX tiles: the operating system's permission (amx_tiles.h).
#include "backend/cpu/amx_tiles.h"

#include <sys/syscall.h>
#include <unistd.h>

#include "backend/cpu/cpu_kernels.h"

namespace hyrt::backend::cpu::amx {

bool tiles_usable() {
  static const bool usable = [] {
    if (!cpu_has_amx()) return false;
#if defined(__linux__) && defined(SYS_arch_prctl)
    // Linux keeps the 8 KiB tile data state off until a process asks (kernel 5.16+); asking
    // again after oneDNN did is harmless.
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return usable;
}

}  // namespace hyrt::backend::cpu::amx
