"""A CLIP-format byte-level BPE vocabulary learned from a caption corpus.

Writes `vocab.json` + `merges.txt` exactly as OpenAI's CLIP / transformers' CLIPTokenizer
store them, so hyrt's C++ tokenizer (src/pipeline/clip_tokenizer.cpp), transformers and
any SD 1.5 tool read them:

  vocab.json : the 256 byte symbols (GPT-2's bytes_to_unicode order), the same 256 with the
               `</w>` end-of-word suffix, one entry per merge (in merge order), then
               `<|startoftext|>` and `<|endoftext|>`; ids 0..n-1 in that order.
  merges.txt : "#version: 0.2" then one "left right" pair a line, best (first learned) first.

Pre-tokenisation follows CLIP: lower-case, collapse white space, split by CLIP's regex
(letters runs, single digits, runs of other symbols); the last symbol of each piece gets
`</w>`. Merges are learned greedily by pair frequency (ties broken by the pair's text, so
the result is a pure function of the corpus) until every word of the corpus is one token.

`Tokenizer.encode(text)` reproduces CLIP's encoding: [bos, ids..., eos, eos padding] to 77.
"""

import collections
import json
import os
import re

START, END = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def bytes_to_unicode():
    """GPT-2 / CLIP: printable bytes stand for themselves, the rest move to U+0100 onwards.
    Returned as an ordered list of (byte, char) in CLIP's vocabulary order."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


BYTE_ENCODER = dict(bytes_to_unicode())
# CLIP's pre-tokeniser, with \p{L} / \p{N} approximated by Python's str classes (the
# captions are ASCII).
PAT = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"
                 r"[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)


def pre_tokenize(text):
    text = re.sub(r"\s+", " ", text).strip().lower()
    return PAT.findall(text)


def word_symbols(piece):
    chars = [BYTE_ENCODER[b] for b in piece.encode("utf-8")]
    chars[-1] += "</w>"
    return tuple(chars)


def learn_merges(corpus, max_merges=10000):
    """BPE merges from an iterable of texts: most frequent adjacent pair first."""
    words = collections.Counter()
    for text in corpus:
        for piece in pre_tokenize(text):
            words[word_symbols(piece)] += 1
    merges = []
    vocab = dict(words)
    while len(merges) < max_merges:
        pairs = collections.Counter()
        for w, c in vocab.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        new_vocab = {}
        for w, c in vocab.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_vocab[tuple(out)] = new_vocab.get(tuple(out), 0) + c
        vocab = new_vocab
    return merges


def vocab_from_merges(merges):
    symbols = [c for _, c in bytes_to_unicode()]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [START, END]
    vocab = {}
    for t in tokens:
        if t not in vocab:  # a merge can rebuild an existing symbol only in odd corpora
            vocab[t] = len(vocab)
    return vocab


class Tokenizer:
    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.merges = list(merges)
        self.ranks = {tuple(m): i for i, m in enumerate(self.merges)}
        self.bos = vocab[START]
        self.eos = vocab[END]
        self.cache = {}

    @classmethod
    def learn(cls, corpus):
        merges = learn_merges(corpus)
        return cls(vocab_from_merges(merges), merges)

    @classmethod
    def load(cls, folder):
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        merges = []
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            for i, line in enumerate(f.read().split("\n")):
                if not line or (i == 0 and line.startswith("#version")):
                    continue
                a, b = line.split(" ")
                merges.append((a, b))
        return cls(vocab, merges)

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(self.vocab, f, ensure_ascii=False)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in self.merges:
                f.write(f"{a} {b}\n")
        cfg = {
            "add_prefix_space": False,
            "bos_token": START,
            "clean_up_tokenization_spaces": False,
            "do_lower_case": True,
            "eos_token": END,
            "errors": "replace",
            "model_max_length": MAX_LENGTH,
            "pad_token": END,
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": END,
        }
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
            json.dump({"bos_token": START, "eos_token": END, "pad_token": END,
                       "unk_token": END}, f, indent=2)

    def bpe(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        word = list(word_symbols(piece))
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in
                     enumerate(zip(word, word[1:]))]
            rank, _ = min(pairs)
            if rank == 1 << 30:
                break
            first, second = self.merges[rank]
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    out.append(first + second)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        ids = [self.vocab.get(s, self.eos) for s in word]
        self.cache[piece] = ids
        return ids

    def tokenize(self, text):
        ids = []
        for piece in pre_tokenize(text):
            if piece == START:
                ids.append(self.bos)
            elif piece == END:
                ids.append(self.eos)
            else:
                ids.extend(self.bpe(piece))
        return ids

    def encode(self, text, max_length=MAX_LENGTH):
        content = self.tokenize(text)[: max_length - 2]
        ids = [self.bos] + content + [self.eos]
        return ids + [self.eos] * (max_length - len(ids))
