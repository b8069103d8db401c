//! Resolving the "auto" (0) thread counts before the runtime is built; the rule itself is
//! [`rankd_kernels::threads`].

use rankd_kernels::{available_cores, ThreadPlan, ThreadRequest};

use super::Config;

impl Config {
    /// Replaces `server.runtime_threads = 0` and `model.torch_threads = 0` with the counts
    /// this machine gets (see [`ThreadPlan::resolve`]), so that everything built from the
    /// config afterwards sees the real sizes. A torch count left to libtorch stays 0. Call
    /// once, before the async runtime is built: with `model.device = "auto"` it asks
    /// libtorch whether CUDA is usable.
    pub fn resolve_threads(&mut self) -> ThreadPlan {
        let asked = ThreadRequest {
            runtime: self.server.runtime_threads,
            torch: self.model.torch_threads,
            workers: self.batching.workers,
        };
        let plan = ThreadPlan::resolve(
            asked,
            available_cores(),
            self.model.device.computes_on_cpu(),
        );
        self.server.runtime_threads = plan.runtime;
        self.model.torch_threads = plan.torch.unwrap_or(0);
        plan
    }
}
