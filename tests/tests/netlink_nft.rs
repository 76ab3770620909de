//! The ipfailover nftables table against the real kernel, in namespaces:
//! it appears in `nft list ruleset`, blocks TCP to blocked addresses while
//! other addresses still work, takes set updates without being re-created,
//! and leaves no trace when removed.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netlink::nft::{NftError, NftSet, NftTable};
use tests::netns::{require_root, veth, NetNs};

const A4: &str = "192.0.2.1";
const B4: &str = "192.0.2.3";
const CLIENT4: &str = "192.0.2.2";
const A6: &str = "2001:db8::1";
const B6: &str = "2001:db8::3";
const CLIENT6: &str = "2001:db8::2";
const PORT: u16 = 4470;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A server with two IPv4 and two IPv6 addresses listening on PORT, and a
/// client, joined by a veth.
fn setup(tag: &str) -> (NetNs, NetNs, Vec<TcpListener>) {
    let server = NetNs::new(&format!("{tag}s")).unwrap();
    let client = NetNs::new(&format!("{tag}c")).unwrap();
    veth(&server, "eth0", &client, "eth0").unwrap();
    for a in [A4, B4] {
        server
            .ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"])
            .unwrap();
    }
    for a in [A6, B6] {
        server
            .ip(&["addr", "add", &format!("{a}/64"), "dev", "eth0", "nodad"])
            .unwrap();
    }
    client
        .ip(&["addr", "add", &format!("{CLIENT4}/24"), "dev", "eth0"])
        .unwrap();
    client
        .ip(&[
            "addr",
            "add",
            &format!("{CLIENT6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    let listeners = [A4, B4, A6, B6]
        .iter()
        .map(|a| {
            let sa = SocketAddr::new(ip(a), PORT);
            server.run(move || TcpListener::bind(sa)).unwrap().unwrap()
        })
        .collect();
    (server, client, listeners)
}

/// Whether a TCP connect from the client to `addr` succeeds within 1 s.
fn reachable(client: &NetNs, addr: &str) -> bool {
    let sa = SocketAddr::new(ip(addr), PORT);
    client
        .run(move || TcpStream::connect_timeout(&sa, Duration::from_secs(1)).is_ok())
        .unwrap()
}

fn nft(ns: &NetNs, args: &[&str]) -> String {
    ns.exec_ok("nft", args).unwrap()
}

/// The kernel handle of the table, from `nft -a list table`.
fn table_handle(ns: &NetNs, name: &str) -> u64 {
    let out = nft(ns, &["-a", "list", "table", "inet", name]);
    let first = out.lines().next().unwrap();
    let handle = first.rsplit("# handle ").next().unwrap().trim();
    handle
        .parse()
        .unwrap_or_else(|_| panic!("no handle in {first:?}"))
}

fn run<F, Fut, R>(ns: &NetNs, f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R>,
    R: Send + 'static,
{
    ns.block_on(f).unwrap()
}

#[test]
fn table_installs_blocks_updates_in_place_and_removes_cleanly() {
    require_root();
    let (server, client, _listeners) = setup("nft");
    let name = "ipf_test_nft";
    let table = NftTable::new(name).unwrap();

    let t = table.clone();
    run(&server, move || async move {
        t.install()
            .tracked(&[ip(A4), ip(A6)])
            .execute()
            .await
            .unwrap();
    });
    let ruleset = nft(&server, &["list", "ruleset"]);
    assert!(ruleset.contains(&format!("table inet {name}")), "{ruleset}");
    for needle in [
        "set public4",
        "set blocked6",
        "chain block",
        "chain track_in",
        A4,
        A6,
    ] {
        assert!(ruleset.contains(needle), "{needle} missing in {ruleset}");
    }
    let handle = table_handle(&server, name);
    for a in [A4, B4, A6, B6] {
        assert!(reachable(&client, a), "{a} unreachable before any block");
    }

    // Block B (v4 and v6): B times out, A still works.
    let t = table.clone();
    run(&server, move || async move {
        t.update()
            .add(NftSet::Blocked, &[ip(B4), ip(B6)])
            .execute()
            .await
            .unwrap();
    });
    assert!(
        !reachable(&client, B4),
        "{B4} still reachable while blocked"
    );
    assert!(
        !reachable(&client, B6),
        "{B6} still reachable while blocked"
    );
    assert!(reachable(&client, A4));
    assert!(reachable(&client, A6));
    assert_eq!(table_handle(&server, name), handle, "table was re-created");
    let blocked = nft(&server, &["list", "set", "inet", name, "blocked4"]);
    assert!(blocked.contains(B4), "{blocked}");

    // Adding a present element and removing a missing one are no-ops;
    // unblocking restores B.
    let t = table.clone();
    run(&server, move || async move {
        t.update()
            .add(NftSet::Blocked, &[ip(B4)])
            .remove(NftSet::Tracked, &[ip(B4)])
            .execute()
            .await
            .unwrap();
        t.update()
            .remove(NftSet::Blocked, &[ip(B4), ip(B6)])
            .execute()
            .await
            .unwrap();
    });
    assert!(reachable(&client, B4), "{B4} unreachable after unblock");
    assert!(reachable(&client, B6), "{B6} unreachable after unblock");
    assert_eq!(table_handle(&server, name), handle, "table was re-created");

    // Re-installing replaces the contents (atomically) and empties the sets.
    let t = table.clone();
    run(&server, move || async move {
        t.update()
            .add(NftSet::Blocked, &[ip(B4)])
            .execute()
            .await
            .unwrap();
        t.install().execute().await.unwrap();
    });
    let ruleset = nft(&server, &["list", "ruleset"]);
    assert!(!ruleset.contains(B4), "{ruleset}");
    assert!(reachable(&client, B4));

    // Removal leaves nothing; removing again is fine.
    let t = table.clone();
    run(&server, move || async move {
        t.remove().execute().await.unwrap();
        t.remove().execute().await.unwrap();
    });
    let ruleset = nft(&server, &["list", "ruleset"]);
    assert!(!ruleset.contains(name), "{ruleset}");
    assert!(reachable(&client, B4));
}

#[test]
fn two_tables_are_independent() {
    require_root();
    let (server, client, _listeners) = setup("nf2");
    let one = NftTable::new("ipf_one").unwrap();
    let two = NftTable::new("ipf_two").unwrap();
    let (o, t) = (one.clone(), two.clone());
    run(&server, move || async move {
        o.install().blocked(&[ip(B4)]).execute().await.unwrap();
        t.install().execute().await.unwrap();
        t.remove().execute().await.unwrap();
    });
    // Removing the second table kept the first (and its block).
    assert!(!reachable(&client, B4));
    let ruleset = nft(&server, &["list", "ruleset"]);
    assert!(ruleset.contains("table inet ipf_one") && !ruleset.contains("ipf_two"));
    run(&server, move || async move {
        one.remove().execute().await.unwrap();
    });
    assert!(reachable(&client, B4));
}

#[test]
fn bad_input_gives_typed_errors() {
    require_root();
    for bad in ["", "with\0nul", &"n".repeat(300)] {
        assert!(
            matches!(NftTable::new(bad), Err(NftError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let ns = NetNs::new("nfe").unwrap();
    let missing = NftTable::new("ipf_not_installed").unwrap();
    let err = run(&ns, move || async move {
        missing
            .update()
            .add(NftSet::Tracked, &[ip(A4)])
            .execute()
            .await
            .unwrap_err()
    });
    assert!(matches!(err, NftError::TableMissing { .. }), "{err:?}");
    // Removing a table that was never installed is not an error.
    let never = NftTable::new("ipf_never").unwrap();
    run(&ns, move || async move {
        never.remove().execute().await.unwrap();
    });
    let out = ns.exec_ok("nft", &["list", "ruleset"]).unwrap();
    assert!(!out.contains("ipf_"), "{out}");
}

#[test]
fn a_large_update_is_one_transaction() {
    require_root();
    let ns = NetNs::new("nfl").unwrap();
    let table = NftTable::new("ipf_large").unwrap();
    // 20,000 IPv6 addresses (~0.7 MB of netlink messages): above the default
    // socket send buffer, so the request must enlarge it.
    let addrs: Vec<IpAddr> = (0..20_000u128)
        .map(|i| IpAddr::V6(std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | i)))
        .collect();
    let count = addrs.len();
    let t = table.clone();
    run(&ns, move || async move {
        t.install().execute().await.unwrap();
        t.update()
            .add(NftSet::Tracked, &addrs)
            .execute()
            .await
            .unwrap();
    });
    let set = nft(&ns, &["-j", "list", "set", "inet", "ipf_large", "public6"]);
    let elements = set.matches("2001:db8::").count();
    assert_eq!(elements, count, "elements in the set");
    run(&ns, move || async move {
        table.remove().execute().await.unwrap();
    });
}

/// Drops CAP_NET_ADMIN from the calling thread only (Linux capabilities
/// are per thread); used on a throw-away `NetNs::run` thread.
fn drop_net_admin_of_this_thread() {
    use nix::libc;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two `Data` records (version 3) into `data`,
    // which is exactly that large; `header` is a valid header.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            std::ptr::from_mut(&mut header),
            data.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "capget failed");
    data[0].effective &= !(1 << CAP_NET_ADMIN);
    data[0].permitted &= !(1 << CAP_NET_ADMIN);
    // SAFETY: as above; capset reads the same two records and changes only
    // the calling thread's capabilities.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            std::ptr::from_mut(&mut header),
            data.as_ptr(),
        )
    };
    assert_eq!(rc, 0, "capset failed");
}

#[test]
fn without_cap_net_admin_the_table_is_refused() {
    require_root();
    let ns = NetNs::new("nfp").unwrap();
    let table = NftTable::new("ipf_noperm").unwrap();
    let err = ns
        .run(move || {
            drop_net_admin_of_this_thread();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { table.install().execute().await.unwrap_err() })
        })
        .unwrap();
    assert!(matches!(err, NftError::PermissionDenied { .. }), "{err:?}");
    let out = ns.exec_ok("nft", &["list", "ruleset"]).unwrap();
    assert!(!out.contains("ipf_noperm"), "{out}");
}
