//go:build amd64 && !purego

#include "textflag.h"

// func encodeSub32AVX2(dst *uint32, x *float64, n int, scale, bound float64) int
TEXT ·encodeSub32AVX2(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSD scale+24(FP), Y14
	VBROADCASTSD bound+32(FP), Y13
	VPCMPEQQ     Y12, Y12, Y12
	VPSRLQ       $1, Y12, Y12       // 0x7fff…: clears the sign bit
	XORQ         BX, BX

loop:
	CMPQ      BX, CX
	JAE       done
	VMOVUPD   (SI)(BX*8), Y0
	VANDPD    Y12, Y0, Y1
	VCMPPD    $0x11, Y13, Y1, Y1    // |x| < bound, ordered: false for NaN
	VMOVMSKPD Y1, AX
	CMPQ      AX, $15
	JNE       done
	VMULPD    Y14, Y0, Y0
	VCVTPD2DQY Y0, X0               // rounds half to even (MXCSR's default)
	VMOVDQU   (DI)(BX*4), X2
	VPSUBD    X2, X0, X0
	VMOVDQU   X0, (DI)(BX*4)
	ADDQ      $4, BX
	JMP       loop

done:
	VZEROUPPER
	MOVQ BX, ret+40(FP)
	RET

// func reveal32AVX2(dst *float64, a, b *uint32, n int, div float64)
TEXT ·reveal32AVX2(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         a+8(FP), SI
	MOVQ         b+16(FP), DX
	MOVQ         n+24(FP), CX
	SHRQ         $2, CX
	JZ           done
	VBROADCASTSD div+32(FP), Y15

loop:
	VMOVDQU   (SI), X0
	VPADDD    (DX), X0, X0
	VCVTDQ2PD X0, Y0
	VDIVPD    Y15, Y0, Y0
	VMOVUPD   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $16, DX
	ADDQ      $32, DI
	DECQ      CX
	JNZ       loop
	VZEROUPPER

done:
	RET
