//go:build amd64 && !purego

#include "textflag.h"

// func low32sAVX2(dst *uint32, src *uint64, n int)
TEXT ·low32sAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   done

loop:
	// Eight words in, the low dword of each picked within the lanes
	// (a0 a2 b0 b2 per lane), then the lanes' quadwords put in order.
	VMOVDQU (SI), Y0
	VMOVDQU 32(SI), Y1
	VSHUFPS $0x88, Y1, Y0, Y2
	VPERMQ  $0xd8, Y2, Y2
	VMOVDQU Y2, (DI)
	ADDQ    $64, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     loop
	VZEROUPPER

done:
	RET

// func widen32sAVX2(dst *uint64, src *uint32, n int, add bool)
TEXT ·widen32sAVX2(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVB add+24(FP), AL
	SHRQ $3, CX
	JZ   done
	TESTB AL, AL
	JNZ  addloop

setloop:
	VPMOVZXDQ (SI), Y0
	VPMOVZXDQ 16(SI), Y1
	VMOVDQU   Y0, (DI)
	VMOVDQU   Y1, 32(DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       setloop
	VZEROUPPER
	RET

addloop:
	VPMOVZXDQ (SI), Y0
	VPMOVZXDQ 16(SI), Y1
	VPADDQ    (DI), Y0, Y0
	VPADDQ    32(DI), Y1, Y1
	VMOVDQU   Y0, (DI)
	VMOVDQU   Y1, 32(DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       addloop
	VZEROUPPER

done:
	RET

// func add32sAVX2(dst, src *uint32, n int, sub bool)
TEXT ·add32sAVX2(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVB sub+24(FP), AL
	SHRQ $3, CX
	JZ   done
	TESTB AL, AL
	JNZ  subloop

addloop:
	VMOVDQU (DI), Y0
	VPADDD  (SI), Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     addloop
	VZEROUPPER
	RET

subloop:
	VMOVDQU (DI), Y0
	VPSUBD  (SI), Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     subloop
	VZEROUPPER

done:
	RET
