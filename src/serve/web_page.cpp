// The page at `/`: a form for txt2img, a progress bar polling /sdapi/v1/progress, and the
// pictures with their parameters. One self-contained string (no files to install, nothing
// fetched from elsewhere), using only the A1111 API the page's server offers.
#include "serve/server.h"

namespace hyrt::serve {

const char* web_page() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hyrt</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; max-width: 60rem; color: #222; }
  h1 { font-size: 1.3rem; }
  label { display: block; margin: 0.4rem 0 0.1rem; font-size: 0.9rem; }
  textarea { width: 100%; box-sizing: border-box; }
  .row { display: flex; gap: 1rem; flex-wrap: wrap; }
  .row > div { min-width: 8rem; }
  input[type=number] { width: 7rem; }
  button { margin-top: 0.8rem; padding: 0.4rem 1.2rem; font-size: 1rem; }
  progress { width: 100%; margin-top: 0.8rem; }
  #error { color: #b00020; white-space: pre-wrap; }
  figure { display: inline-block; margin: 0.5rem; vertical-align: top; max-width: 100%; }
  figure img { image-rendering: pixelated; min-width: 256px; max-width: 100%; border: 1px solid #ccc; }
  figcaption { font-family: monospace; font-size: 0.8rem; white-space: pre-wrap; max-width: 32rem; }
</style>
</head>
<body>
<h1>hyrt</h1>
<form id="form">
  <label for="prompt">Prompt</label>
  <textarea id="prompt" rows="2">a red circle on a blue background</textarea>
  <label for="negative_prompt">Negative prompt</label>
  <textarea id="negative_prompt" rows="1"></textarea>
  <div class="row">
    <div><label for="width">Width</label><input id="width" type="number" min="8" step="8" value="0"></div>
    <div><label for="height">Height</label><input id="height" type="number" min="8" step="8" value="0"></div>
    <div><label for="steps">Steps</label><input id="steps" type="number" min="1" value="20"></div>
    <div><label for="cfg_scale">CFG scale</label><input id="cfg_scale" type="number" min="0" step="0.5" value="7"></div>
    <div><label for="sampler">Sampler</label><select id="sampler"></select></div>
    <div><label for="sd_vae">Decoder</label><select id="sd_vae"><option value="Automatic">the model's VAE</option></select></div>
    <div><label for="seed">Seed (-1: random)</label><input id="seed" type="number" value="-1"></div>
    <div><label for="batch_size">Images</label><input id="batch_size" type="number" min="1" max="8" value="1"></div>
    <div><label for="clip_skip">Clip skip</label><input id="clip_skip" type="number" min="1" max="12" value="1"></div>
    <div><label for="hr_scale">Hires fix (x, 1: off)</label><input id="hr_scale" type="number" min="1" max="4" step="0.25" value="1"></div>
    <div><label for="denoising_strength">Hires strength</label><input id="denoising_strength" type="number" min="0.05" max="1" step="0.05" value="0.5"></div>
  </div>
  <button id="generate" type="submit">Generate</button>
  <button id="interrupt" type="button" disabled>Interrupt</button>
</form>
<progress id="progress" max="1" value="0"></progress>
<div id="status"></div>
<div id="error"></div>
<div id="images"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);

async function init() {
  try {
    const samplers = await (await fetch("/sdapi/v1/samplers")).json();
    for (const s of samplers) $("sampler").add(new Option(s.name, s.name));
    const vaes = await (await fetch("/sdapi/v1/sd-vae")).json();
    for (const v of vaes) $("sd_vae").add(new Option(v.model_name + " (TAESD, fast)", v.model_name));
    const options = await (await fetch("/sdapi/v1/options")).json();
    $("status").textContent = "model: " + options.sd_model_checkpoint +
        " (width and height 0: its native size)";
  } catch (e) {
    $("error").textContent = "cannot reach the server: " + e;
  }
}

let polling = null;
async function poll() {
  try {
    const p = await (await fetch("/sdapi/v1/progress")).json();
    $("progress").value = p.progress;
    if (p.current_image) {  // hyrt serve --live-previews: the picture the model aims at so far
      let img = $("preview");
      if (!img) {
        img = document.createElement("img");
        img.id = "preview";
        img.className = "result";
        img.alt = "live preview";
        $("images").replaceChildren(img);
      }
      img.src = "data:image/png;base64," + p.current_image;
    }
    if (p.state.sampling_steps > 0)
      $("status").textContent = "step " + p.state.sampling_step + " / " + p.state.sampling_steps +
          (p.eta_relative > 0 ? ", about " + p.eta_relative.toFixed(1) + " s left" : "") +
          (p.state.job_count > 1 ? ", " + (p.state.job_count - 1) + " waiting" : "");
  } catch (e) { /* the next poll tries again */ }
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const num = (id) => Number($(id).value);
  const body = {
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    steps: num("steps"),
    cfg_scale: num("cfg_scale"),
    sampler_name: $("sampler").value,
    seed: num("seed"),
    batch_size: num("batch_size"),
  };
  body.override_settings = {CLIP_stop_at_last_layers: num("clip_skip")};
  if ($("sd_vae").value !== "Automatic") body.override_settings.sd_vae = $("sd_vae").value;
  if (num("hr_scale") > 1) {
    body.enable_hr = true;
    body.hr_scale = num("hr_scale");
    body.denoising_strength = num("denoising_strength");
  }
  if (num("width") > 0) body.width = num("width");
  if (num("height") > 0) body.height = num("height");
  $("error").textContent = "";
  $("generate").disabled = true;
  $("interrupt").disabled = false;
  $("progress").value = 0;
  polling = setInterval(poll, 500);
  try {
    const res = await fetch("/sdapi/v1/txt2img", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const out = await res.json();
    if (!res.ok) {
      $("error").textContent = res.status + " " + (out.field ? out.field + ": " : "") + out.detail;
      return;
    }
    const info = JSON.parse(out.info);
    $("images").replaceChildren();
    out.images.forEach((b64, i) => {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.className = "result";
      img.src = "data:image/png;base64," + b64;
      img.alt = body.prompt;
      const cap = document.createElement("figcaption");
      cap.textContent = info.infotexts[i];
      fig.append(img, cap);
      $("images").append(fig);
    });
    $("progress").value = 1;
    $("status").textContent = info.interrupted ? "interrupted" :
        "done: seed " + info.seed + ", " + out.images.length + " image(s)";
  } catch (e) {
    $("error").textContent = "request failed: " + e;
  } finally {
    clearInterval(polling);
    $("generate").disabled = false;
    $("interrupt").disabled = true;
  }
});

$("interrupt").addEventListener("click", () => fetch("/sdapi/v1/interrupt", {method: "POST"}));
init();
</script>
</body>
</html>
)HTML";
}

}  // namespace hyrt::serve
