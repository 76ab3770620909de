//! Addresses, links and events on a real kernel, in namespaces this test
//! makes (needs root). Two namespaces joined by a veth pair: `a` (the node
//! under test, eth0) and `b` (its peer, eth0, 192.0.2.2 / 2001:db8::2).

use std::sync::Arc;
use std::time::Duration;

use netlink::addr::{AddrError, IpPrefix};
use netlink::events::{Event, Events};
use netlink::link::{self, LinkError, Netlink};
use tests::netns::{require_root, veth, NetNs};

fn pair(tag: &str) -> (Arc<NetNs>, Arc<NetNs>) {
    require_root();
    let a = NetNs::new(&format!("{tag}a")).unwrap();
    let b = NetNs::new(&format!("{tag}b")).unwrap();
    veth(&a, "eth0", &b, "eth0").unwrap();
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"])
        .unwrap();
    b.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::2/64",
        "dev",
        "eth0",
        "nodad",
    ])
    .unwrap();
    (Arc::new(a), Arc::new(b))
}

fn pings(from: &NetNs, to: &str) -> bool {
    from.exec("ping", &["-c", "1", "-W", "1", to])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `to` answers a ping within three tries: the ping just before the address
/// was added left the peer's neighbour entry failed, and under load its
/// next resolution may miss the first one-second wait.
fn answers(from: &NetNs, to: &str) -> bool {
    (0..3).any(|_| pings(from, to))
}

async fn wait_event(events: &mut Events, what: &str, pred: impl Fn(&Event) -> bool) {
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = events.next().await {
            if pred(&ev) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no event: {what}");
}

#[test]
fn added_address_answers_ping_removed_does_not_and_events_report_both() {
    let (a, b) = pair("nla");
    let peer = Arc::clone(&b);
    a.block_on(move || async move {
        let mut events = Events::subscribe().unwrap();
        let nl = Netlink::new().unwrap();
        let idx = nl.link("eth0").await.unwrap().index;
        assert_eq!(nl.link_by_index(idx).await.unwrap().name, "eth0");
        assert!(matches!(
            nl.link_by_index(99_999).await,
            Err(LinkError::NoSuchInterface { .. })
        ));
        let v4: IpPrefix = "192.0.2.10/24".parse().unwrap();
        let v6: IpPrefix = "2001:db8::10/64".parse().unwrap();

        assert!(!pings(&peer, "192.0.2.10"), "answers before it is added");
        nl.add_addresses("eth0", [v4, v6]).execute().await.unwrap();
        // Adding again is not an error (EEXIST is the wanted state).
        nl.add_address("eth0", v4).execute().await.unwrap();
        let list = nl.addresses("eth0").await.unwrap();
        assert!(list.contains(&v4) && list.contains(&v6), "{list:?}");
        let all = nl.all_addresses().await.unwrap();
        assert!(
            all.contains(&(idx, v4)) && all.contains(&(idx, v6)),
            "{all:?}"
        );
        let lo = nl.link("lo").await.unwrap().index;
        assert!(
            all.contains(&(lo, "127.0.0.1/8".parse().unwrap())),
            "{all:?}"
        );
        // NODAD: the IPv6 address answers at once, no tentative period.
        assert!(answers(&peer, "192.0.2.10"));
        assert!(answers(&peer, "2001:db8::10"));
        wait_event(&mut events, "v4 added", |e| {
            *e == Event::AddressAdded {
                index: idx,
                prefix: v4,
            }
        })
        .await;

        nl.del_addresses("eth0", [v4, v6]).execute().await.unwrap();
        // Removing a missing address is not an error (EADDRNOTAVAIL).
        nl.del_address("eth0", v4).execute().await.unwrap();
        assert!(!pings(&peer, "192.0.2.10"), "still answers after removal");
        assert!(!pings(&peer, "2001:db8::10"), "v6 still answers");
        let list = nl.addresses("eth0").await.unwrap();
        assert!(!list.contains(&v4) && !list.contains(&v6), "{list:?}");
        wait_event(&mut events, "v4 removed", |e| {
            *e == Event::AddressRemoved {
                index: idx,
                prefix: v4,
            }
        })
        .await;
        wait_event(&mut events, "v6 removed", |e| {
            *e == Event::AddressRemoved {
                index: idx,
                prefix: v6,
            }
        })
        .await;

        // Carrier loss: the peer's end goes down.
        peer.ip(&["link", "set", "eth0", "down"]).unwrap();
        wait_event(
            &mut events,
            "carrier lost",
            |e| matches!(e, Event::Link(s) if s.index == idx && s.admin_up && !s.carrier),
        )
        .await;
        assert!(!nl.link("eth0").await.unwrap().carrier);
        peer.ip(&["link", "set", "eth0", "up"]).unwrap();
        wait_event(
            &mut events,
            "carrier back",
            |e| matches!(e, Event::Link(s) if s.index == idx && s.is_usable()),
        )
        .await;
        // Admin down and up through our own verb.
        nl.set_link_up("eth0", false).await.unwrap();
        wait_event(
            &mut events,
            "admin down",
            |e| matches!(e, Event::Link(s) if s.index == idx && !s.admin_up),
        )
        .await;
        nl.set_link_up("eth0", true).await.unwrap();
        wait_event(
            &mut events,
            "admin up",
            |e| matches!(e, Event::Link(s) if s.index == idx && s.admin_up),
        )
        .await;
    })
    .unwrap();
}

#[test]
fn many_addresses_are_added_and_removed_pipelined() {
    let (a, _b) = pair("nlm");
    a.block_on(|| async {
        let nl = Netlink::new().unwrap();
        let prefixes: Vec<IpPrefix> = (1..=200u16)
            .map(|i| format!("2001:db8:1::{i:x}/128").parse().unwrap())
            .chain((1..=200u8).map(|i| format!("198.51.100.{i}/32").parse().unwrap()))
            .collect();
        nl.add_addresses("eth0", prefixes.clone())
            .execute()
            .await
            .unwrap();
        let list = nl.addresses("eth0").await.unwrap();
        for p in &prefixes {
            assert!(list.contains(p), "{p} missing");
        }
        nl.del_addresses("eth0", prefixes.clone())
            .window(16)
            .execute()
            .await
            .unwrap();
        let list = nl.addresses("eth0").await.unwrap();
        assert!(prefixes.iter().all(|p| !list.contains(p)));
    })
    .unwrap();
}

#[test]
fn promote_secondaries_keeps_the_rest_of_the_subnet() {
    let (a, _b) = pair("nlp");
    a.block_on(|| async {
        let nl = Netlink::new().unwrap();
        link::set_promote_secondaries("eth0").unwrap();
        assert!(link::promote_secondaries("eth0").unwrap());
        let first: IpPrefix = "203.0.113.10/24".parse().unwrap();
        let second: IpPrefix = "203.0.113.11/24".parse().unwrap();
        nl.add_address("eth0", first).execute().await.unwrap();
        nl.add_address("eth0", second).execute().await.unwrap();
        nl.del_address("eth0", first).execute().await.unwrap();
        let list = nl.addresses("eth0").await.unwrap();
        assert_eq!(
            list.iter()
                .filter(|p| p.addr().is_ipv4())
                .collect::<Vec<_>>(),
            vec![&second],
            "the secondary went with the primary"
        );
    })
    .unwrap();
}

#[test]
fn bad_input_gives_typed_errors() {
    let (a, _b) = pair("nlx");
    a.block_on(|| async {
        let nl = Netlink::new().unwrap();
        let p: IpPrefix = "192.0.2.10/24".parse().unwrap();
        let e = nl.add_address("nosuch0", p).execute().await.unwrap_err();
        assert!(
            matches!(&e, AddrError::Link(LinkError::NoSuchInterface { name }) if name == "nosuch0"),
            "{e:?}"
        );
        assert!(matches!(
            nl.link("nosuch0").await,
            Err(LinkError::NoSuchInterface { .. })
        ));
        assert!(matches!(
            nl.addresses("nosuch0").await,
            Err(AddrError::Link(LinkError::NoSuchInterface { .. }))
        ));
        assert!(matches!(
            nl.link("much-too-long-name").await,
            Err(LinkError::InvalidName { .. })
        ));
        assert!(matches!(
            "192.0.2.10/40".parse::<IpPrefix>(),
            Err(AddrError::InvalidPrefix { .. })
        ));
        assert!(matches!(
            link::set_promote_secondaries("nosuch0"),
            Err(LinkError::NoSuchInterface { .. })
        ));
        // A kernel refusal keeps its errno: the kernel will not configure
        // the unspecified address.
        let zero: IpPrefix = "::/0".parse().unwrap();
        let e = nl.add_address("eth0", zero).execute().await.unwrap_err();
        assert!(e.errno().is_some(), "{e:?}");
    })
    .unwrap();
}
