// Not committed: a fixed workload for callgrind instruction counts.
#![allow(clippy::unwrap_used)]
#[path = "../benches/workload/mod.rs"]
mod workload;
use palisade_engine::engine::Ruleset;
use std::path::Path;
use std::sync::Arc;
use workload::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args[2].parse().unwrap();
    let rs = match args[1].as_str() {
        "ossec" => Arc::new(
            Ruleset::load_ossec_etc(&Path::new(SHARED).join("corpus/ossec/legacy-3.3.0/etc"))
                .unwrap(),
        ),
        _ => Arc::new(palisade_engine::default_ruleset::load().unwrap()),
    };
    let access = access_log(n);
    let sshd = sshd_log(n);
    let a = judge_all(&rs, access.iter().map(Vec::as_slice), ACCESS_LOG_LOCATION);
    let s = judge_all(&rs, sshd.iter().map(Vec::as_slice), AUTH_LOG_LOCATION);
    println!("{a:?} {s:?}");
}
