//! `rankctl fault`: a drill fault on one node (see the server's `fault` module).

use anyhow::Result;
use clap::Args;
use rankd_proto::admin::v1::InjectFaultRequest;

#[derive(Args)]
pub struct FaultArgs {
    /// Added to every Rank call the node serves.
    #[arg(long, default_value_t = 0)]
    latency_ms: u32,
    /// Share of those calls that fail with INTERNAL (0..=1).
    #[arg(long, default_value_t = 0.0)]
    error_ratio: f64,
    /// Clears by itself after this many seconds; 0: until `--clear`.
    #[arg(long, default_value_t = 0)]
    duration_s: u32,
    /// Remove the node's fault.
    #[arg(long)]
    clear: bool,
    /// The node to degrade (the call is not forwarded).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
}

pub async fn run(a: FaultArgs) -> Result<()> {
    let resp = crate::conn::admin(&a.addr)
        .await?
        .inject_fault(InjectFaultRequest {
            latency_ms: a.latency_ms,
            error_ratio: a.error_ratio,
            duration_s: a.duration_s,
            clear: a.clear,
        })
        .await
        .map_err(crate::models::status("InjectFault"))?
        .into_inner();
    if crate::format::json_output() {
        return crate::format::print_json(&resp);
    }
    if !resp.active {
        println!("node {}: no fault", resp.node_id);
        return Ok(());
    }
    let until = match resp.remaining_s {
        0 => "until cleared".to_string(),
        s => format!("for {s} s more"),
    };
    println!(
        "node {}: Rank calls delayed {} ms, {:.1}% failing, {until}",
        resp.node_id,
        resp.latency_ms,
        resp.error_ratio * 100.0
    );
    Ok(())
}
