package meter

// Opcodes of the WebAssembly instructions the rewrite reads or writes
// (https://webassembly.github.io/spec/core/binary/instructions.html).
const (
	opUnreachable        = 0x00
	opNop                = 0x01
	opBlock              = 0x02
	opLoop               = 0x03
	opIf                 = 0x04
	opElse               = 0x05
	opEnd                = 0x0B
	opBr                 = 0x0C
	opBrIf               = 0x0D
	opBrTable            = 0x0E
	opReturn             = 0x0F
	opCall               = 0x10
	opCallIndirect       = 0x11
	opReturnCall         = 0x12
	opReturnCallIndirect = 0x13
	opDrop               = 0x1A
	opSelect             = 0x1B
	opSelectTyped        = 0x1C
	opLocalGet           = 0x20
	opLocalSet           = 0x21
	opLocalTee           = 0x22
	opGlobalGet          = 0x23
	opGlobalSet          = 0x24
	opTableGet           = 0x25
	opTableSet           = 0x26
	opFirstLoad          = 0x28 // i32.load; loads and stores run to opLastStore
	opLastStore          = 0x3E // i64.store32
	opMemorySize         = 0x3F
	opMemoryGrow         = 0x40
	opI32Const           = 0x41
	opI64Const           = 0x42
	opF32Const           = 0x43
	opF64Const           = 0x44
	opFirstNumeric       = 0x45 // i32.eqz; the instructions without immediates run to opLastNumeric
	opI32LtS             = 0x48
	opI32Add             = 0x6A
	opI32Sub             = 0x6B
	opI32ShrU            = 0x76
	opLastNumeric        = 0xC4 // i64.extend32_s
	opRefNull            = 0xD0
	opRefIsNull          = 0xD1
	opRefFunc            = 0xD2
	opPrefixMisc         = 0xFC // saturating truncation, bulk memory and table instructions
	opPrefixSIMD         = 0xFD
)

// Instructions after opPrefixMisc.
const (
	miscLastTruncSat = 7 // i64.trunc_sat_f64_u; 0 to 7 have no immediate
	miscMemoryInit   = 8
	miscDataDrop     = 9
	miscMemoryCopy   = 10
	miscMemoryFill   = 11
	miscTableInit    = 12
	miscElemDrop     = 13
	miscTableCopy    = 14
	miscTableGrow    = 15
	miscTableSize    = 16
	miscTableFill    = 17
)

// Instructions after opPrefixSIMD.
const (
	simdLastStore      = 11 // v128.store; 0 to 11 take a memarg
	simdV128Const      = 12 // 16 immediate bytes
	simdI8x16Shuffle   = 13 // 16 lane indices
	simdFirstLane      = 21 // i8x16.extract_lane_s; 21 to 34 take a lane index
	simdLastLane       = 34 // f64x2.replace_lane
	simdFirstLaneMem   = 84 // v128.load8_lane; 84 to 91 take a memarg and a lane index
	simdLastLaneMem    = 91 // v128.store64_lane
	simdLoad32Zero     = 92 // takes a memarg
	simdLoad64Zero     = 93 // takes a memarg
	simdLastInstuction = 0x113
)

// Value and block types the rewrite writes.
const (
	typeI32    = 0x7F
	typeFunc   = 0x60
	blockEmpty = 0x40
)
