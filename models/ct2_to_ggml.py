#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model (model.bin + vocabulary.txt) to the
ggml file format that whisper.cpp / whisper-rs load.

CTranslate2 fuses the self-attention Q/K/V projections into one matrix and the
cross-attention K/V into another; whisper.cpp wants them separate, with no key
bias (Whisper's key projection has none, so CTranslate2 stores zeros there).
The log-mel filterbank is computed here (Slaney-style, as librosa does), and
the byte-level BPE vocabulary is written back as raw bytes.

Usage: python3 models/ct2_to_ggml.py MODEL_DIR OUT.bin [f16|q8_0]
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C
# CTranslate2's DataType enum, as written in model.bin (binary version >= 4).
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
N_TEXT_TOKENS = 50257  # GPT-2 byte-level tokens (plus <|endoftext|>) written as bytes


class Ct2Model:
    def __init__(self, path: Path):
        self.vars: dict[str, np.ndarray] = {}
        with open(path, "rb") as f:
            data = f.read()
        off = 0

        def take(fmt: str):
            nonlocal off
            vals = struct.unpack_from("<" + fmt, data, off)
            off += struct.calcsize("<" + fmt)
            return vals if len(vals) > 1 else vals[0]

        def string() -> str:
            nonlocal off
            n = take("H")
            s = data[off:off + n - 1].decode("utf-8")
            off += n
            return s

        version = take("I")
        if version < 5:
            raise ValueError(f"unsupported CTranslate2 binary version {version}")
        self.spec = string()
        take("I")  # spec revision
        for _ in range(take("I")):
            name = string()
            rank = take("B")
            dims = [take("I") for _ in range(rank)]
            dtype = CT2_DTYPES[take("B")]
            nbytes = take("I")
            arr = np.frombuffer(data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=off)
            off += nbytes
            self.vars[name] = arr.reshape(dims) if dims else arr
        for _ in range(take("I")):
            alias, target = string(), string()
            self.vars[alias] = self.vars[target]
        if self.spec != "WhisperSpec":
            raise ValueError(f"not a Whisper model: {self.spec}")

    def __getitem__(self, k: str) -> np.ndarray:
        return self.vars[k]

    def has(self, k: str) -> bool:
        return k in self.vars


def mel_filters(sr: int = 16000, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters (librosa's default)."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        logstep = np.log(6.4) / 27.0
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        logstep = np.log(6.4) / 27.0
        return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2:n_mels + 2] - mel_pts[:n_mels]))[:, None]
    return weights.astype(np.float32)  # (n_mels, n_fft/2+1)


def gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's printable-unicode mapping of the 256 byte values."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tok: str, dec: dict[str, int]) -> bytes:
    if all(ch in dec for ch in tok):
        return bytes(dec[ch] for ch in tok)
    return tok.encode("utf-8")  # special tokens such as <|endoftext|>


GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0 = 0, 1, 8
GGML_FTYPE_F16, GGML_FTYPE_Q8_0 = 1, 7
GGML_QNT_VERSION = 2  # whisper.cpp reads ftype % 1000 and the version from ftype // 1000
QK8_0 = 32


def quantize_q8_0(arr: np.ndarray) -> bytes:
    """ggml block_q8_0: per 32 values, an f16 scale then 32 int8 (x = d*q)."""
    x = arr.astype(np.float32).reshape(-1, QK8_0)
    amax = np.abs(x).max(axis=1, keepdims=True)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    q = np.rint(x * inv).clip(-127, 127).astype(np.int8)
    blocks = np.empty(x.shape[0], dtype=[("d", "<f2"), ("qs", "i1", QK8_0)])
    blocks["d"] = d[:, 0].astype(np.float16)
    blocks["qs"] = q
    return blocks.tobytes()


def convert(model_bin: Path, vocab_txt: Path, out: Path, quant: str = "f16") -> None:
    m = Ct2Model(model_bin)
    vocab = vocab_txt.read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()

    n_vocab, n_text_state = m["decoder/embeddings/weight"].shape
    n_audio_state, n_mels, _ = m["encoder/conv1/weight"].shape
    n_audio_ctx = m["encoder/position_encodings/encodings"].shape[0]
    n_text_ctx = m["decoder/position_encodings/encodings"].shape[0]
    n_audio_layer = sum(1 for k in m.vars if k.startswith("encoder/layer_") and k.endswith("self_attention/linear_0/weight"))
    n_text_layer = sum(1 for k in m.vars if k.startswith("decoder/layer_") and k.endswith("self_attention/linear_0/weight"))
    # Every Whisper size uses 64-dimensional attention heads.
    n_audio_head, n_text_head = n_audio_state // 64, n_text_state // 64

    tensors: list[tuple[str, np.ndarray]] = []

    def add(name: str, arr: np.ndarray) -> None:
        tensors.append((name, np.ascontiguousarray(arr)))

    def linear(dst: str, src: str, bias: bool = True) -> None:
        add(f"{dst}.weight", m[f"{src}/weight"])
        if bias:
            add(f"{dst}.bias", m[f"{src}/bias"])

    def ln(dst: str, src: str) -> None:
        add(f"{dst}.weight", m[f"{src}/gamma"])
        add(f"{dst}.bias", m[f"{src}/beta"])

    def split_qkv(dst: str, src: str, n: int) -> None:
        w, b = m[f"{src}/weight"], m[f"{src}/bias"]
        for i, part in enumerate(["query", "key", "value"][3 - n:]):
            add(f"{dst}.{part}.weight", w[i * w.shape[0] // n:(i + 1) * w.shape[0] // n])
            if part != "key":
                add(f"{dst}.{part}.bias", b[i * b.shape[0] // n:(i + 1) * b.shape[0] // n])

    add("encoder.conv1.weight", m["encoder/conv1/weight"])
    add("encoder.conv1.bias", m["encoder/conv1/bias"].reshape(-1, 1))
    add("encoder.conv2.weight", m["encoder/conv2/weight"])
    add("encoder.conv2.bias", m["encoder/conv2/bias"].reshape(-1, 1))
    add("encoder.positional_embedding", m["encoder/position_encodings/encodings"])
    for i in range(n_audio_layer):
        s, d = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        ln(f"{d}.attn_ln", f"{s}/self_attention/layer_norm")
        split_qkv(f"{d}.attn", f"{s}/self_attention/linear_0", 3)
        linear(f"{d}.attn.out", f"{s}/self_attention/linear_1")
        ln(f"{d}.mlp_ln", f"{s}/ffn/layer_norm")
        linear(f"{d}.mlp.0", f"{s}/ffn/linear_0")
        linear(f"{d}.mlp.2", f"{s}/ffn/linear_1")
    ln("encoder.ln_post", "encoder/layer_norm")

    add("decoder.positional_embedding", m["decoder/position_encodings/encodings"])
    add("decoder.token_embedding.weight", m["decoder/embeddings/weight"])
    for i in range(n_text_layer):
        s, d = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        ln(f"{d}.attn_ln", f"{s}/self_attention/layer_norm")
        split_qkv(f"{d}.attn", f"{s}/self_attention/linear_0", 3)
        linear(f"{d}.attn.out", f"{s}/self_attention/linear_1")
        ln(f"{d}.cross_attn_ln", f"{s}/attention/layer_norm")
        linear(f"{d}.cross_attn.query", f"{s}/attention/linear_0")
        split_qkv(f"{d}.cross_attn", f"{s}/attention/linear_1", 2)
        linear(f"{d}.cross_attn.out", f"{s}/attention/linear_2")
        ln(f"{d}.mlp_ln", f"{s}/ffn/layer_norm")
        linear(f"{d}.mlp.0", f"{s}/ffn/linear_0")
        linear(f"{d}.mlp.2", f"{s}/ffn/linear_1")
    ln("decoder.ln", "decoder/layer_norm")

    # whisper.cpp keeps biases, norms, conv biases and positional tables in f32.
    f32_names = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding"}
    dec = gpt2_byte_decoder()
    filters = mel_filters(n_mels=n_mels)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<I", GGML_MAGIC))
        f.write(struct.pack("<11i", n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
                            n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels,
                            GGML_FTYPE_Q8_0 + GGML_QNT_VERSION * 1000 if quant == "q8_0" else GGML_FTYPE_F16))
        f.write(struct.pack("<2i", *filters.shape))
        f.write(filters.tobytes())
        toks = vocab[:N_TEXT_TOKENS]
        f.write(struct.pack("<i", len(toks)))
        for t in toks:
            b = token_bytes(t, dec)
            f.write(struct.pack("<i", len(b)))
            f.write(b)
        for name, arr in tensors:
            # Matrices take the model's weight type; conv kernels stay f16.
            matrix = arr.ndim == 2 and name not in f32_names
            if quant == "q8_0" and matrix and arr.shape[-1] % QK8_0 == 0:
                ttype, payload = GGML_TYPE_Q8_0, quantize_q8_0(arr)
            elif arr.ndim >= 2 and name not in f32_names:
                ttype, payload = GGML_TYPE_F16, arr.astype(np.float16).tobytes()
            else:
                ttype, payload = GGML_TYPE_F32, arr.astype(np.float32).tobytes()
            nb = name.encode()
            f.write(struct.pack("<3i", arr.ndim, len(nb), ttype))
            for d in reversed(arr.shape):
                f.write(struct.pack("<i", d))
            f.write(nb)
            f.write(payload)
    tmp.rename(out)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    src = Path(sys.argv[1])
    convert(src / "model.bin", src / "vocabulary.txt", Path(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else "f16")
