//! Test and benchmark support for ipfailover: network namespaces that clean up
//! after themselves, processes that are ended by pid, and the benchmark
//! harness (`cargo run --release -p tests --bin bench -- SCENARIO`).
//!
//! Every namespace made here is named `ipf-<tag>-<pid>-<n>` so that parallel
//! tests never collide, and is deleted when its guard drops, even when the test
//! fails. Tests may only send traffic inside these namespaces, using the
//! documentation address ranges (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, 2001:db8::/32).

pub mod arp;
pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod forge;
pub mod netns;
pub mod plot;
pub mod sim;
