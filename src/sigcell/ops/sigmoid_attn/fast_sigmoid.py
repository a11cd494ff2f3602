"""PTX of the fast sigmoid that splits its scores between two pipes of the SM.

The fast sigmoid is ``0.5 tanh(x) + 0.5`` with ``x = s / 2``: one ``tanh.approx`` per score on the
special-function unit (MUFU), 16 results per clock per SM on Hopper, as many as the tensor cores' rate in
scores at head dim 64. "Mixed" sigmoids send one score in ``every`` to the FMA pipe instead, through
``1 / (1 + 2^z)`` with ``z = -s log2(e)``: 2^z from a degree-3 polynomial of the fraction plus an
exponent add, the reciprocal from an integer first guess and two Newton steps (15 instructions, no MUFU).
Its relative error is below 1e-4 everywhere (tanh.approx: 2^-11 of tanh, i.e. more near sigmoid = 0).

Both Triton kernels (kernels.py) and the Gluon forward (hopper.py) take the same PTX, as inline assembly
on ``every`` consecutive register elements of a thread (``pack``).
"""

from __future__ import annotations

# Minimax (relative error 7.5e-5) cubic of 2^f on [-1/2, 1/2], lowest degree first.
EXP2_CUBIC = (0.9999280571937561, 0.6932609677314758, 0.2426111251115799, 0.0551716685295105)
NEG_TWO_LOG2E = -2.8853900817779268  # z = -s log2(e) = x * this, x = s / 2
ROUND_MAGIC = 12582912.0  # 1.5 * 2^23: adding it rounds a float32 below 2^22 to an integer
X_CLAMP = 22.0  # |x| <= 22 keeps |z| < 64: 2^z and 1 + 2^z stay normal (sigmoid(-44) = 8e-20)
RECIPROCAL_GUESS = 0xFEF311C3  # 0x7EF311C3 - bits(d) guesses 1 / d to 12 %; this form takes bits(-d)
MIXED_EVERY = (4, 8)  # the mixes the kernels compile: one score in `every` on the FMA pipe


def _hex(value: float) -> str:
    """A PTX float32 immediate (``0f`` + the IEEE bits)."""
    import struct

    return "0f" + struct.pack(">f", value).hex().upper()


def mixed_sigmoid_asm(every: int) -> str:
    """PTX computing ``sigmoid(2 x)`` for ``every`` float32 inputs ``$every .. $(2 every - 1)`` into
    ``$0 .. $(every - 1)``: the first through the FMA pipe, the others through ``tanh.approx``."""
    if every not in MIXED_EVERY:
        raise ValueError(f"every must be one of {MIXED_EVERY}, got {every}")
    c0, c1, c2, c3 = (_hex(c) for c in EXP2_CUBIC)
    k, magic, one = _hex(NEG_TWO_LOG2E), _hex(ROUND_MAGIC), _hex(1.0)
    x = f"${every}"
    lines = [
        "{",
        ".reg .f32 %sg_x, %sg_j, %sg_f, %sg_p, %sg_d, %sg_r, %sg_e;",
        ".reg .b32 %sg_jb, %sg_pb, %sg_db, %sg_rb;",
        f"max.f32 %sg_x, {x}, {_hex(-X_CLAMP)};",
        f"min.f32 %sg_x, %sg_x, {_hex(X_CLAMP)};",
        f"fma.rn.f32 %sg_j, %sg_x, {k}, {magic};",  # round(z) in the low mantissa bits of j
        f"sub.f32 %sg_f, {magic}, %sg_j;",  # -round(z)
        f"fma.rn.f32 %sg_f, %sg_x, {k}, %sg_f;",  # z - round(z), in [-1/2, 1/2]
        f"fma.rn.f32 %sg_p, %sg_f, {c3}, {c2};",
        f"fma.rn.f32 %sg_p, %sg_p, %sg_f, {c1};",
        f"fma.rn.f32 %sg_p, %sg_p, %sg_f, {c0};",  # 2^f
        "mov.b32 %sg_jb, %sg_j;",
        "mov.b32 %sg_pb, %sg_p;",
        "mad.lo.s32 %sg_pb, %sg_jb, 8388608, %sg_pb;",  # 2^f * 2^round(z): add round(z) to the exponent
        "mov.b32 %sg_p, %sg_pb;",
        f"sub.f32 %sg_d, {_hex(-1.0)}, %sg_p;",  # -d = -(1 + 2^z)
        "mov.b32 %sg_db, %sg_d;",
        f"sub.u32 %sg_rb, {RECIPROCAL_GUESS:#x}, %sg_db;",
        "mov.b32 %sg_r, %sg_rb;",
        f"fma.rn.f32 %sg_e, %sg_d, %sg_r, {one};",  # 1 - d r
        "fma.rn.f32 %sg_r, %sg_r, %sg_e, %sg_r;",
        f"fma.rn.f32 %sg_e, %sg_d, %sg_r, {one};",
        "fma.rn.f32 $0, %sg_r, %sg_e, %sg_r;",
    ]
    half = _hex(0.5)
    for i in range(1, every):
        lines += [f"tanh.approx.f32 %sg_e, ${every + i};", f"fma.rn.f32 ${i}, %sg_e, {half}, {half};"]
    lines.append("}")
    return "\n".join(lines)


def mixed_sigmoid_constraints(every: int) -> str:
    """Inline-assembly constraints of :func:`mixed_sigmoid_asm`: ``every`` float32 outputs, then inputs."""
    return ",".join(["=f"] * every + ["f"] * every)
