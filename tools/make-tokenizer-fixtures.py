#!/usr/bin/env python3
"""Usage: tools/make-tokenizer-fixtures.py [--gguf models/SmolLM2-135M-Instruct-Q4_1.gguf] [--out tests/fixtures/tokenizer]

Writes the tokenizer test fixtures (needs `pip install tokenizers gguf`; the GGUF comes from
tools/fetch-demo-model.sh):

  small_bpe.json      a byte-level BPE tokenizer.json (~600 tokens, 3 special tokens) trained
                      with Hugging Face `tokenizers` on the text written below
  small_refs.json     reference ids from `tokenizers` for the test texts, for the small
                      vocabulary under several pre-tokenizers (GPT-2, prefix space, SmolLM
                      digits, Llama-3, Qwen2, grouped digits), plus decode references
  smollm2_vocab.json  tokens, token types and merges extracted from the SmolLM2 GGUF
  smollm2_refs.json   reference ids for the test texts from a `tokenizers` tokenizer built
                      from those lists the way SmolLM2's own tokenizer.json is configured
                      (Digits(individual) + ByteLevel(use_regex), CONTROL tokens special)

Every file is deterministic for a given `tokenizers` version, so re-running it gives the
same fixtures.
"""
import argparse
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Training text, written for this project (no third-party text): varied English prose,
# accented Latin, Greek, Cyrillic, CJK, Arabic, Hindi, emoji, numbers, code.
TRAIN_TEXT = """
The ring passes each block of keys and values to the next rank while it computes attention.
Every rank holds a striped slice of the cache, so the work stays balanced as the document grows.
We don't want a slow tokenizer; it'll have to handle a million tokens in a few seconds.
She said: "I'm sure they've finished, but we'd better check the logs before the job ends."
Numbers appear everywhere: 1234567, 3.14159, 2026-11-23, 0x7f, 10,000 and 42%.
Prices rose from $19.99 to $24.50 in 2024; the budget for 2025 is 1,250,000 euros.
Le café était déjà fermé quand nous sommes arrivés à la gare, près de l'hôtel.
Ça coûte très cher, mais la qualité est supérieure à celle de l'année dernière.
El niño comió una manzana y después jugó en el jardín con su hermana pequeña.
Über den Wolken muss die Freiheit wohl grenzenlos sein, sagte der Müller zur Bäckerin.
Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy. Ærøskøbing ligger på Ærø.
Γειά σου κόσμε, η γλώσσα είναι όμορφη. Привет, мир! Как дела у тебя сегодня?
今日は良い天気ですね。東京の桜はとても綺麗です。我们今天去公园散步，然后吃晚饭。
한국어 문장도 조금 넣어 봅니다. 안녕하세요, 만나서 반갑습니다.
مرحبا بالعالم، هذه جملة عربية قصيرة للاختبار. نص آخر باللغة العربية.
नमस्ते दुनिया, यह हिंदी में एक छोटा वाक्य है।
Emoji: 😀 🎉 👍🏽 🚀 ❤️ 👨‍👩‍👧 — and symbols like → ≤ ≥ ∞ © ™ § ¶ • … « » „ “ ”.
def attention(q, k, v, scale):
    scores = q @ k.T * scale  # (n, n)
    weights = softmax(scores, axis=-1)
    return weights @ v

for (int i = 0; i < n; ++i) {
    out[i] = std::max(out[i], x[i] * 2.0f);  // clamp
}
if [[ -f "$file" ]]; then echo "found $file"; fi
<|im_start|>user
Summarize the document in three sentences.<|im_end|>
<|im_start|>assistant
The document describes a system for long-context inference.<|im_end|>
<|endoftext|>
Tabs\tand\tnewlines\n\nshould survive, and so should    runs of    spaces.
THE END. WE'LL SEE. YOU'RE RIGHT. IT'S DONE. I'D SAY SO. THEY'VE GONE. I'M HERE.
"""

# Texts the references cover: one per behaviour worth pinning.
TEST_TEXTS = [
    "Hello world! This is a plain English sentence.",
    "The quick brown fox jumps over the lazy dog, doesn't it?",
    "don't I'll we're they've she'd I'm it's DON'T I'LL WE'RE THEY'VE IT'S",
    "Le café était déjà fermé; ça coûte très cher à l'hôtel.",
    "Zażółć gęślą jaźń. Příliš žluťoučký kůň. Ærø",
    "Decomposed accents: e\u0301 a\u0300 n\u0303 o\u0308",
    "今日は良い天気ですね。我们今天去公园散步。한국어 문장",
    "مرحبا بالعالم، هذه جملة عربية.",
    "नमस्ते दुनिया",
    "Γειά σου κόσμε. Привет, мир!",
    "Emoji 😀🎉 👍🏽 family 👨‍👩‍👧 heart ❤️ rocket🚀!",
    "1234567 and 12 and 3.14159 and 2026-11-23 and 1,250,000 and ٣٤٥ and ²³",
    "x1y22z333w4444",
    "   leading spaces and trailing spaces   ",
    "runs    of     spaces\there\t\ttabs\nnew\n\nlines\r\nwindows\r\n\r\nend",
    " ",
    "\n",
    "\t \n \t",
    "a\u00a0b\u2003c\u3000d\u0085e\u2028f",
    "x\u180e\u180ey\u200b\u200bz\u000b\u000bw\u000c",
    "word \u180e\u180e word \u180e! \u180ex \u0085\u0085y \u0085",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n",
    "for (int i = 0; i < n; ++i) { out[i] += x[i] * 2.0f; }",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text<|im_end|><|im_start|>",
    "not special: <|im_sta and <|endoftext| and <|IM_END|>",
    "spaces around  <|im_end|>  and\t<|im_start|> \n x <|endoftext|> ",
    "!!!??? ... --- *** ### $$$ %%% &&& (((])) {{{}}}",
    "https://example.com/path?query=1&other=two#frag user@example.org",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "'s 's' ''s '''",
    "Mixed\u200bzero\u200bwidth and soft\u00adhyphen",
    "",
]

GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(add_prefix_space=False, use_regex=True):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True,
            "use_regex": use_regex}


def split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


# Pre-tokenizer variants tested on the small vocabulary. gguf_pre: the GGUF
# `tokenizer.ggml.pre` name meaning the same thing (the tests check from_vocab too).
VARIANTS = {
    "gpt2": {"pre_tokenizer": byte_level(), "gguf_pre": "gpt-2", "ignore_merges": False},
    "gpt2_prefix_space": {"pre_tokenizer": byte_level(add_prefix_space=True), "gguf_pre": None,
                          "ignore_merges": False},
    "smollm": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, byte_level()]},
        "gguf_pre": "smollm", "ignore_merges": False},
    "digits_grouped": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False}, byte_level()]},
        "gguf_pre": None, "ignore_merges": False},
    "llama3": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        split(LLAMA3_RE), byte_level(use_regex=False)]},
        "gguf_pre": "llama-bpe", "ignore_merges": True, "bos": "<|im_start|>"},
    "qwen2": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        split(QWEN2_RE), byte_level(use_regex=False)]},
        "gguf_pre": "qwen2", "ignore_merges": False},
    # Added tokens that absorb whitespace: <|im_end|> on its left, <|im_start|> on its right.
    "gpt2_strip": {"pre_tokenizer": byte_level(), "gguf_pre": None, "ignore_merges": False,
                   "strip": {"<|im_end|>": "lstrip", "<|im_start|>": "rstrip"}},
}


def train_small():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    # Repeat with small variations so that frequent pairs are clear-cut and training is stable.
    rng = random.Random(1234)
    lines = [l for l in TRAIN_TEXT.split("\n") if l]
    corpus = []
    for _ in range(20):
        rng.shuffle(lines)
        corpus.extend(lines)
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def variant_json(base_json, name):
    v = VARIANTS[name]
    doc = json.loads(base_json)
    doc["pre_tokenizer"] = v["pre_tokenizer"]
    doc["model"]["ignore_merges"] = v["ignore_merges"]
    for t in doc["added_tokens"]:
        if t["content"] in v.get("strip", {}):
            t[v["strip"][t["content"]]] = True
    if "bos" in v:
        bos_id = next(t["id"] for t in doc["added_tokens"] if t["content"] == v["bos"])
        doc["post_processor"] = {"type": "TemplateProcessing",
                                 "single": [{"SpecialToken": {"id": v["bos"], "type_id": 0}},
                                            {"Sequence": {"id": "A", "type_id": 0}}],
                                 "pair": [{"SpecialToken": {"id": v["bos"], "type_id": 0}},
                                          {"Sequence": {"id": "A", "type_id": 0}},
                                          {"Sequence": {"id": "B", "type_id": 1}}],
                                 "special_tokens": {v["bos"]: {"id": v["bos"], "ids": [bos_id],
                                                               "tokens": [v["bos"]]}}}
    return json.dumps(doc, ensure_ascii=False)


def small_fixtures(out):
    tok = train_small()
    base = tok.to_str()
    with open(os.path.join(out, "small_bpe.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(json.loads(base), ensure_ascii=False, indent=1))
        f.write("\n")
    refs = {"texts": TEST_TEXTS, "variants": {}, "decode": []}
    for name, v in VARIANTS.items():
        doc = variant_json(base, name)
        t = Tokenizer.from_str(doc)
        add_bos = "bos" in v
        ids = [t.encode(s, add_special_tokens=add_bos).ids for s in TEST_TEXTS]
        # The test rebuilds each variant from small_bpe.json by swapping in these parts.
        refs["variants"][name] = {"pre_tokenizer": v["pre_tokenizer"], "gguf_pre": v["gguf_pre"],
                                  "ignore_merges": v["ignore_merges"], "bos": v.get("bos"),
                                  "post_processor": json.loads(doc)["post_processor"],
                                  "added_tokens": json.loads(doc)["added_tokens"],
                                  "add_bos": add_bos, "ids": ids}
    # Decode references: runs of ids across piece boundaries and special tokens.
    rng = random.Random(99)
    t = Tokenizer.from_str(base)
    for s in TEST_TEXTS:
        ids = t.encode(s, add_special_tokens=False).ids
        refs["decode"].append({"ids": ids, "text": t.decode(ids, skip_special_tokens=False)})
    for _ in range(3):
        ids = [rng.randrange(3, t.get_vocab_size()) for _ in range(40)]
        text = t.decode(ids, skip_special_tokens=False)
        if "\ufffd" not in text:  # lossy decodes depend on the replacement policy: skip them
            refs["decode"].append({"ids": ids, "text": text})
    with open(os.path.join(out, "small_refs.json"), "w", encoding="utf-8") as f:
        json.dump(refs, f, ensure_ascii=False)
        f.write("\n")
    print(f"small: vocab {t.get_vocab_size()}, {len(json.loads(base)['model']['merges'])} merges")


def gguf_lists(path):
    from gguf import GGUFReader
    r = GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key, default=None):
        f = r.fields.get(key)
        if f is None:
            return default
        v = f.parts[f.data[0]]
        return bytes(v).decode("utf-8") if f.types[0].name == "STRING" else int(v[0])

    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    return {"source": os.path.basename(path), "model": scalar("tokenizer.ggml.model"),
            "pre": scalar("tokenizer.ggml.pre"), "bos_id": scalar("tokenizer.ggml.bos_token_id", -1),
            "eos_id": scalar("tokenizer.ggml.eos_token_id", -1),
            "add_bos": bool(scalar("tokenizer.ggml.add_bos_token", 0)),
            "tokens": strings("tokenizer.ggml.tokens"), "token_types": types,
            "merges": strings("tokenizer.ggml.merges")}


def hf_from_gguf_lists(lists):
    """A `tokenizers` tokenizer equal to SmolLM2's tokenizer.json, built from GGUF lists."""
    assert lists["model"] == "gpt2" and lists["pre"] == "smollm", (lists["model"], lists["pre"])
    vocab = {t: i for i, t in enumerate(lists["tokens"])}
    merges = [tuple(m.split(" ")) for m in lists["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                          use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(lists["tokens"], lists["token_types"]) if ty in (3, 4)]
    tok.add_special_tokens(special)
    return tok


def smollm2_fixtures(out, gguf_path):
    lists = gguf_lists(gguf_path)
    with open(os.path.join(out, "smollm2_vocab.json"), "w", encoding="utf-8") as f:
        json.dump(lists, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    tok = hf_from_gguf_lists(lists)
    ids = [tok.encode(s, add_special_tokens=False).ids for s in TEST_TEXTS]
    with open(os.path.join(out, "smollm2_refs.json"), "w", encoding="utf-8") as f:
        json.dump({"texts": TEST_TEXTS, "ids": ids}, f, ensure_ascii=False)
        f.write("\n")
    print(f"smollm2: {len(lists['tokens'])} tokens, {len(lists['merges'])} merges, pre {lists['pre']}")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=os.path.join(root, "models", "SmolLM2-135M-Instruct-Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "tokenizer"))
    ap.add_argument("--encode", nargs="+", metavar=("OUT.json", "TEXT[:MAX_CHARS]"),
                    help="only write SmolLM2 ids of these texts (a list per text; the --ids of "
                         "tools/gguf-reference.py)")
    args = ap.parse_args()
    if args.encode:
        tok = hf_from_gguf_lists(gguf_lists(args.gguf))
        ids = []
        for spec in args.encode[1:]:
            file, _, limit = spec.partition(":")
            with open(file, encoding="utf-8") as f:
                text = f.read()
            ids.append(tok.encode(text[: int(limit)] if limit else text, add_special_tokens=False).ids)
        with open(args.encode[0], "w") as f:
            json.dump(ids, f)
        return
    os.makedirs(args.out, exist_ok=True)
    small_fixtures(args.out)
    if not os.path.exists(args.gguf):
        sys.exit(f"{args.gguf}: not found; run tools/fetch-demo-model.sh first")
    smollm2_fixtures(args.out, args.gguf)


if __name__ == "__main__":
    main()
