//! How a node shares its cores between the async runtime (gRPC) and libtorch when the config
//! leaves a thread count at 0 ("auto").
//!
//! Left to their own defaults, tokio starts one runtime thread per core and libtorch one
//! intra-op thread per core, so a node computing on the CPU would run twice as many busy
//! threads as it has cores, and each pool would keep preempting the other. On the 2-core dev
//! VM that default got 0.59× the bare engine's throughput, where one thread each got 0.89×
//! (docs/benchmarks.md). So on the CPU, "auto" splits the cores instead:
//! - the runtime gets a quarter of them, at least one;
//! - libtorch gets the rest, divided between the inference workers, at least one each.
//!
//! On CUDA the model's arithmetic runs on the GPU and the host's threads mostly decode
//! requests and launch kernels, so there both pools keep their own defaults.
//!
//! A count set in the config is always kept as it is, even if it oversubscribes the cores.

use crate::DeviceSpec;

/// Thread counts for one node, after "auto" was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPlan {
    /// Async runtime worker threads.
    pub runtime: usize,
    /// libtorch intra-op threads; `None` leaves libtorch's default (one per core).
    pub torch: Option<usize>,
}

/// What the node was asked for; 0 means auto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadRequest {
    pub runtime: usize,
    pub torch: usize,
    /// Inference worker threads (`batching.workers`); each runs its own forward passes with
    /// `torch` intra-op threads.
    pub workers: usize,
}

impl ThreadPlan {
    /// Resolves `asked` for a machine with `cores` usable cores, where the model computes on
    /// the CPU (`on_cpu`) or on a GPU.
    pub fn resolve(asked: ThreadRequest, cores: usize, on_cpu: bool) -> ThreadPlan {
        let cores = cores.max(1);
        let runtime = match asked.runtime {
            0 if on_cpu => (cores / 4).max(1),
            0 => cores,
            n => n,
        };
        let torch = match asked.torch {
            0 if on_cpu => Some((cores.saturating_sub(runtime) / asked.workers.max(1)).max(1)),
            0 => None,
            n => Some(n),
        };
        ThreadPlan { runtime, torch }
    }
}

/// Cores this process may use: its CPU affinity and cgroup quota included, as the standard
/// library reads them. 1 when they cannot be read.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl DeviceSpec {
    /// Whether a model loaded with this spec computes on the CPU. `auto` asks libtorch
    /// whether CUDA is usable, as loading would.
    pub fn computes_on_cpu(self) -> bool {
        match self {
            DeviceSpec::Cpu => true,
            DeviceSpec::Cuda(_) => false,
            DeviceSpec::Auto => !crate::cuda_available(),
        }
    }
}

/// libtorch's intra-op thread count in this process now.
pub fn intra_op_threads() -> usize {
    usize::try_from(tch::get_num_threads()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(
        runtime: usize,
        torch: usize,
        workers: usize,
        cores: usize,
        on_cpu: bool,
    ) -> ThreadPlan {
        let asked = ThreadRequest {
            runtime,
            torch,
            workers,
        };
        ThreadPlan::resolve(asked, cores, on_cpu)
    }

    fn both(runtime: usize, torch: usize) -> ThreadPlan {
        ThreadPlan {
            runtime,
            torch: Some(torch),
        }
    }

    #[test]
    fn auto_on_the_cpu_splits_the_cores_between_the_pools() {
        // (cores, workers) -> (runtime, torch)
        for (cores, workers, want) in [
            (1, 1, both(1, 1)),
            (2, 1, both(1, 1)),
            (4, 1, both(1, 3)),
            (8, 1, both(2, 6)),
            (16, 1, both(4, 12)),
            (16, 2, both(4, 6)),
            (16, 3, both(4, 4)),
            (2, 4, both(1, 1)),
        ] {
            assert_eq!(
                plan(0, 0, workers, cores, true),
                want,
                "{cores} cores, {workers} workers"
            );
        }
    }

    #[test]
    fn a_count_from_the_config_is_kept_and_auto_fills_the_rest() {
        assert_eq!(plan(3, 0, 1, 16, true), both(3, 13));
        assert_eq!(plan(0, 5, 1, 16, true), both(4, 5));
        // Kept even when it oversubscribes: the operator asked for it.
        assert_eq!(plan(8, 8, 2, 2, true), both(8, 8));
        // A runtime that takes every core still leaves libtorch one thread.
        assert_eq!(plan(4, 0, 1, 4, true), both(4, 1));
    }

    #[test]
    fn auto_on_a_gpu_keeps_both_pools_defaults() {
        let gpu = plan(0, 0, 1, 16, false);
        assert_eq!(
            gpu,
            ThreadPlan {
                runtime: 16,
                torch: None
            }
        );
        assert_eq!(plan(2, 3, 1, 16, false), both(2, 3));
    }

    #[test]
    fn zero_cores_is_read_as_one() {
        assert_eq!(plan(0, 0, 1, 0, true), both(1, 1));
    }
}
