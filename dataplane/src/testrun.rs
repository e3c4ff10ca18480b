//! Running the program on a frame without a port (BPF_PROG_TEST_RUN), and the per-CPU trace of its last decision.

use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, ProgramInput};

use crate::abi::{read_from, xe_decision};
use crate::error::{Error, Result};
use crate::maps::map_err;
use crate::program::Dataplane;

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone, Copy)]
pub struct RunOutput {
    /// XDP return code.
    pub action: u32,
    /// Bytes written to the output buffer.
    pub len: usize,
    /// Kernel-measured time per repetition.
    pub duration: Duration,
}

impl Dataplane {
    /// Runs the program once on `input` (BPF_PROG_TEST_RUN); the frame as the
    /// program left it lands in `out`.
    pub fn test_run(&self, input: &[u8], out: &mut [u8]) -> Result<RunOutput> {
        self.test_run_repeat(input, out, 1)
    }

    /// Runs the program `repeat` times on `input`. Note that the kernel feeds
    /// the rewritten frame back on each repetition.
    pub fn test_run_repeat(&self, input: &[u8], out: &mut [u8], repeat: u32) -> Result<RunOutput> {
        self.test_run_from(0, input, out, repeat)
    }

    /// Runs the program `repeat` times on `input` as received on `ingress_ifindex` (0: none).
    pub fn test_run_from(
        &self,
        ingress_ifindex: u32,
        input: &[u8],
        out: &mut [u8],
        repeat: u32,
    ) -> Result<RunOutput> {
        test_run_prog(
            &self.skel.progs.xdp_ecmp,
            ingress_ifindex,
            input,
            out,
            repeat,
        )
    }

    /// The last decision recorded on `cpu` (needs `trace_decisions`).
    pub fn last_decision(&self, cpu: usize) -> Result<xe_decision> {
        let per_cpu = self
            .skel
            .maps
            .xe_trace
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(map_err("xe_trace", "lookup"))?
            .unwrap_or_default();
        Ok(per_cpu
            .get(cpu)
            .and_then(|b| read_from(b))
            .unwrap_or_default())
    }
}

/// BPF_PROG_TEST_RUN of any XDP program, optionally with an ingress ifindex
/// in the context (a FIB lookup needs one).
pub fn test_run_prog(
    prog: &libbpf_rs::ProgramMut<'_>,
    ingress_ifindex: u32,
    input: &[u8],
    out: &mut [u8],
    repeat: u32,
) -> Result<RunOutput> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u32; 6];
    ctx[1] = input.len() as u32;
    ctx[3] = ingress_ifindex;
    let mut ctx_bytes: Vec<u8> = ctx.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let pi = ProgramInput {
        data_in: Some(input),
        data_out: Some(out),
        context_in: (ingress_ifindex != 0).then_some(&mut ctx_bytes[..]),
        repeat,
        ..Default::default()
    };
    let o = prog.test_run(pi).map_err(Error::TestRun)?;
    Ok(RunOutput {
        action: o.return_value,
        len: o.data.map_or(0, |d| d.len()),
        duration: o.duration,
    })
}

/// Pins the calling thread to `cpu`, so that a test run and the per-CPU
/// trace entry it writes are on the same CPU.
pub fn pin_thread_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> usize {
    // SAFETY: no arguments, no memory.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).unwrap_or(0)
}
