//! Reads the compiled program's instructions to find how it reads a map's values: which loads go through the pointer a lookup in that map returned (so a test can hold the program to one load per entry the control plane replaces whole).

use std::collections::HashSet;

/// One access through a pointer to a map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueAccess {
    /// A load of `size` bytes at `off` into the value.
    Load { off: i16, size: u8 },
    /// A store of `size` bytes at `off`.
    Store { off: i16, size: u8 },
    /// Arithmetic on the pointer (an index into the value, or a field's
    /// address); accesses through the result are `LoadAt`/`StoreAt`.
    Derived,
    /// A load of `size` bytes through a derived pointer.
    LoadAt { size: u8 },
    /// A store through a derived pointer.
    StoreAt { size: u8 },
}

/// One instruction, decoded far enough for [`value_accesses`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_MEM: u8 = 0x60;
const LD_IMM64: u8 = 0x18;
const OP_MOV: u8 = 0xb0;
const MOV64_X: u8 = 0xbf;
const CALL: u8 = 0x85;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP: i32 = 1;
const FP: u8 = 10;

fn size_of_code(code: u8) -> u8 {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

/// Every access through a pointer returned by `bpf_map_lookup_elem` on the
/// map whose fd the loader put into the program (`map_fd`), in program
/// order. Follows copies between registers and spills to the stack; reads
/// the instructions in order (as the compiler laid them out), so a pointer
/// stays followed until its register or stack slot is overwritten.
pub fn value_accesses(insns: &[Insn], map_fd: i32) -> Vec<ValueAccess> {
    let mut out = Vec::new();
    let mut regs: u16 = 0; // registers holding a value pointer
    let mut derived: u16 = 0; // registers holding a pointer computed from one
    let mut stack: HashSet<i16> = HashSet::new(); // frame slots holding one
    let mut r1_is_map = false;
    let held = |regs: u16, r: u8| regs & (1 << r) != 0;
    let mut i = 0;
    while i < insns.len() {
        let n = insns[i];
        let class = n.code & 0x07;
        let size = size_of_code(n.code);
        let mut writes_dst = false;
        match class {
            CLASS_LD if n.code == LD_IMM64 => {
                if n.dst == 1 {
                    r1_is_map = n.src == PSEUDO_MAP_FD && n.imm == map_fd;
                }
                regs &= !(1 << n.dst);
                i += 2;
                continue;
            }
            CLASS_LDX => {
                if held(regs, n.src) {
                    out.push(ValueAccess::Load { off: n.off, size });
                }
                if held(derived, n.src) {
                    out.push(ValueAccess::LoadAt { size });
                }
                let spilled = n.src == FP && size == 8 && stack.contains(&n.off);
                regs &= !(1 << n.dst);
                derived &= !(1 << n.dst);
                if spilled {
                    regs |= 1 << n.dst;
                }
                if n.dst == 1 {
                    r1_is_map = false;
                }
            }
            CLASS_STX | CLASS_ST => {
                if held(regs, n.dst) {
                    out.push(ValueAccess::Store { off: n.off, size });
                }
                if held(derived, n.dst) {
                    out.push(ValueAccess::StoreAt { size });
                }
                if n.dst == FP {
                    if class == CLASS_STX
                        && n.code & 0xe0 == MODE_MEM
                        && size == 8
                        && held(regs, n.src)
                    {
                        stack.insert(n.off);
                    } else {
                        stack.remove(&n.off);
                    }
                }
            }
            CLASS_ALU | CLASS_ALU64 => {
                if n.code & 0xf0 == OP_MOV {
                    // A 64-bit register copy keeps the pointer; any other move overwrites.
                    let (from, from_derived) = (
                        n.code == MOV64_X && held(regs, n.src),
                        n.code == MOV64_X && held(derived, n.src),
                    );
                    regs &= !(1 << n.dst);
                    derived &= !(1 << n.dst);
                    if from {
                        regs |= 1 << n.dst;
                    }
                    if from_derived {
                        derived |= 1 << n.dst;
                    }
                } else if class == CLASS_ALU64 && held(regs | derived, n.dst) {
                    if held(regs, n.dst) {
                        out.push(ValueAccess::Derived);
                    }
                    regs &= !(1 << n.dst);
                    derived |= 1 << n.dst;
                } else {
                    writes_dst = true;
                }
                if n.dst == 1 {
                    r1_is_map = false;
                }
            }
            CLASS_JMP if n.code == CALL => {
                let ours = n.src == 0 && n.imm == HELPER_MAP_LOOKUP && r1_is_map;
                regs &= !0x3f; // r0-r5 do not survive a call
                derived &= !0x3f;
                if ours {
                    regs |= 1;
                }
                r1_is_map = false;
            }
            _ => {}
        }
        if writes_dst {
            regs &= !(1 << n.dst);
            derived &= !(1 << n.dst);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// r1 = map 7; call lookup; r8 = r0; spill r8; loads through r0, r8 and the reload.
    #[test]
    fn follows_copies_and_spills_of_the_looked_up_pointer() {
        let prog = [
            insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, 7),
            insn(0, 0, 0, 0, 0),
            insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP),
            insn(0x79, 2, 0, 0, 0),    // r2 = *(u64 *)(r0 + 0)
            insn(MOV64_X, 8, 0, 0, 0), // r8 = r0
            insn(0x7b, FP, 8, -16, 0), // *(u64 *)(r10 - 16) = r8
            insn(0xb7, 8, 0, 0, 0),    // r8 = 0
            insn(0x71, 3, 8, 20, 0),   // r3 = *(u8 *)(r8 + 20): r8 no longer holds it
            insn(0x79, 4, FP, -16, 0), // r4 = *(u64 *)(r10 - 16)
            insn(0x71, 5, 4, 20, 0),   // r5 = *(u8 *)(r4 + 20)
            insn(0x07, 4, 0, 0, 8),    // r4 += 8
            insn(0x69, 5, 4, 4, 0),    // r5 = *(u16 *)(r4 + 4): through a derived pointer
            insn(0xb7, 4, 0, 0, 0),    // r4 = 0
            insn(0x69, 5, 4, 4, 0),    // not followed
            // Another map's lookup does not count.
            insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, 9),
            insn(0, 0, 0, 0, 0),
            insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP),
            insn(0x61, 2, 0, 0, 0),
        ];
        assert_eq!(
            value_accesses(&prog, 7),
            vec![
                ValueAccess::Load { off: 0, size: 8 },
                ValueAccess::Load { off: 20, size: 1 },
                ValueAccess::Derived,
                ValueAccess::LoadAt { size: 2 },
            ]
        );
    }
}
