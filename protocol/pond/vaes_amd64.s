//go:build amd64 && !purego

#include "textflag.h"

// One round of the AES-128 key schedule (FIPS 197, 5.2) with AES-NI, as
// in Intel's white paper "Intel Advanced Encryption Standard (AES) New
// Instructions Set": X0 holds the previous round key and becomes the
// next, X4 must start at zero and carries between rounds, X1 is scratch.
#define EXPAND_128(rcon, off) \
	AESKEYGENASSIST $rcon, X0, X1; \
	PSHUFD $0xff, X1, X1; \
	SHUFPS $0x10, X0, X4; \
	PXOR X4, X0; \
	SHUFPS $0x8c, X0, X4; \
	PXOR X4, X0; \
	PXOR X1, X0; \
	MOVUPS X0, off(BX)

// func vaesExpandKey(key *[16]byte, rk *[176]byte)
TEXT ·vaesExpandKey(SB), NOSPLIT, $0-16
	MOVQ   key+0(FP), AX
	MOVQ   rk+8(FP), BX
	MOVUPS (AX), X0
	MOVUPS X0, (BX)
	PXOR   X4, X4
	EXPAND_128(0x01, 16)
	EXPAND_128(0x02, 32)
	EXPAND_128(0x04, 48)
	EXPAND_128(0x08, 64)
	EXPAND_128(0x10, 80)
	EXPAND_128(0x20, 96)
	EXPAND_128(0x40, 112)
	EXPAND_128(0x80, 128)
	EXPAND_128(0x1b, 144)
	EXPAND_128(0x36, 160)
	PXOR   X0, X0
	PXOR   X1, X1
	PXOR   X4, X4
	RET

// The ten rounds of AES-128 on the counter blocks in r, round keys in
// Z16 (whitening) to Z26 (last round).
#define ROUNDS_1(r) \
	VPXORQ      Z16, r, r; \
	VAESENC     Z17, r, r; \
	VAESENC     Z18, r, r; \
	VAESENC     Z19, r, r; \
	VAESENC     Z20, r, r; \
	VAESENC     Z21, r, r; \
	VAESENC     Z22, r, r; \
	VAESENC     Z23, r, r; \
	VAESENC     Z24, r, r; \
	VAESENC     Z25, r, r; \
	VAESENCLAST Z26, r, r

#define ROUND_4(k) \
	VAESENC k, Z0, Z0; \
	VAESENC k, Z1, Z1; \
	VAESENC k, Z2, Z2; \
	VAESENC k, Z3, Z3

// func vaesCTR(rk *[176]byte, dst *uint64, blocks int, lo, hi uint64, add bool)
//
// Sets (add false) or adds to (add true) the 2·blocks words at dst the
// AES-128 counter-mode keystream under the round keys rk, from the
// counter block whose big-endian halves are hi and lo, read as
// little-endian words. The counter's low half must not wrap: the caller
// splits a call at 2^64. Sixteen blocks (four 512-bit registers) at a
// time, then four, then the last one to three under a mask.
TEXT ·vaesCTR(SB), NOSPLIT, $0-41
	MOVQ    rk+0(FP), AX
	MOVQ    dst+8(FP), DI
	MOVQ    blocks+16(FP), CX
	MOVQ    lo+24(FP), R8
	MOVQ    hi+32(FP), R9
	MOVBLZX add+40(FP), R10

	VBROADCASTI32X4 0(AX), Z16
	VBROADCASTI32X4 16(AX), Z17
	VBROADCASTI32X4 32(AX), Z18
	VBROADCASTI32X4 48(AX), Z19
	VBROADCASTI32X4 64(AX), Z20
	VBROADCASTI32X4 80(AX), Z21
	VBROADCASTI32X4 96(AX), Z22
	VBROADCASTI32X4 112(AX), Z23
	VBROADCASTI32X4 128(AX), Z24
	VBROADCASTI32X4 144(AX), Z25
	VBROADCASTI32X4 160(AX), Z26
	VBROADCASTI32X4 vaesSwap<>(SB), Z27
	VBROADCASTI32X4 vaesInc4<>(SB), Z29

	// Z28 holds four counters as native words, low half first: lane j is
	// (lo+j, hi). Reversing a lane's bytes gives the big-endian block.
	VMOVQ     R8, X0
	VPINSRQ   $1, R9, X0, X0
	VSHUFI64X2 $0, Z0, Z0, Z0
	VPADDQ    vaesLanes<>(SB), Z0, Z28

loop16:
	CMPQ    CX, $16
	JB      loop4
	VPADDQ  Z29, Z28, Z5
	VPADDQ  Z29, Z5, Z6
	VPADDQ  Z29, Z6, Z7
	VPSHUFB Z27, Z28, Z0
	VPSHUFB Z27, Z5, Z1
	VPSHUFB Z27, Z6, Z2
	VPSHUFB Z27, Z7, Z3
	VPADDQ  Z29, Z7, Z28
	VPXORQ  Z16, Z0, Z0
	VPXORQ  Z16, Z1, Z1
	VPXORQ  Z16, Z2, Z2
	VPXORQ  Z16, Z3, Z3
	ROUND_4(Z17)
	ROUND_4(Z18)
	ROUND_4(Z19)
	ROUND_4(Z20)
	ROUND_4(Z21)
	ROUND_4(Z22)
	ROUND_4(Z23)
	ROUND_4(Z24)
	ROUND_4(Z25)
	VAESENCLAST Z26, Z0, Z0
	VAESENCLAST Z26, Z1, Z1
	VAESENCLAST Z26, Z2, Z2
	VAESENCLAST Z26, Z3, Z3
	TESTQ   R10, R10
	JZ      store16
	VPADDQ  0(DI), Z0, Z0
	VPADDQ  64(DI), Z1, Z1
	VPADDQ  128(DI), Z2, Z2
	VPADDQ  192(DI), Z3, Z3

store16:
	VMOVDQU64 Z0, 0(DI)
	VMOVDQU64 Z1, 64(DI)
	VMOVDQU64 Z2, 128(DI)
	VMOVDQU64 Z3, 192(DI)
	ADDQ      $256, DI
	SUBQ      $16, CX
	JMP       loop16

loop4:
	CMPQ    CX, $4
	JB      tail
	VPSHUFB Z27, Z28, Z0
	VPADDQ  Z29, Z28, Z28
	ROUNDS_1(Z0)
	TESTQ   R10, R10
	JZ      store4
	VPADDQ  (DI), Z0, Z0

store4:
	VMOVDQU64 Z0, (DI)
	ADDQ      $64, DI
	SUBQ      $4, CX
	JMP       loop4

tail:
	TESTQ CX, CX
	JZ    done
	// K1 selects the 2·CX words of the last CX blocks.
	SHLQ  $1, CX
	MOVQ  $1, R11
	SHLQ  CX, R11
	DECQ  R11
	KMOVW R11, K1
	VPSHUFB Z27, Z28, Z0
	ROUNDS_1(Z0)
	TESTQ R10, R10
	JZ    storetail
	VMOVDQU64.Z (DI), K1, Z1
	VPADDQ      Z1, Z0, Z0

storetail:
	VMOVDQU64 Z0, K1, (DI)

done:
	// Leave no keystream or key material in the registers.
	VPXORQ Z0, Z0, Z0
	VPXORQ Z1, Z1, Z1
	VPXORQ Z2, Z2, Z2
	VPXORQ Z3, Z3, Z3
	VPXORQ Z16, Z16, Z16
	VPXORQ Z17, Z17, Z17
	VPXORQ Z18, Z18, Z18
	VPXORQ Z19, Z19, Z19
	VPXORQ Z20, Z20, Z20
	VPXORQ Z21, Z21, Z21
	VPXORQ Z22, Z22, Z22
	VPXORQ Z23, Z23, Z23
	VPXORQ Z24, Z24, Z24
	VPXORQ Z25, Z25, Z25
	VPXORQ Z26, Z26, Z26
	VZEROUPPER
	RET

// vaesSwap reverses the bytes of a 128-bit lane (VPSHUFB indices 15..0).
DATA vaesSwap<>+0(SB)/8, $0x08090a0b0c0d0e0f
DATA vaesSwap<>+8(SB)/8, $0x0001020304050607
GLOBL vaesSwap<>(SB), RODATA|NOPTR, $16

// vaesInc4 adds four to the low half of a lane's counter.
DATA vaesInc4<>+0(SB)/8, $4
DATA vaesInc4<>+8(SB)/8, $0
GLOBL vaesInc4<>(SB), RODATA|NOPTR, $16

// vaesLanes offsets the four lanes' counters by 0, 1, 2, 3.
DATA vaesLanes<>+0(SB)/8, $0
DATA vaesLanes<>+8(SB)/8, $0
DATA vaesLanes<>+16(SB)/8, $1
DATA vaesLanes<>+24(SB)/8, $0
DATA vaesLanes<>+32(SB)/8, $2
DATA vaesLanes<>+40(SB)/8, $0
DATA vaesLanes<>+48(SB)/8, $3
DATA vaesLanes<>+56(SB)/8, $0
GLOBL vaesLanes<>(SB), RODATA|NOPTR, $64
