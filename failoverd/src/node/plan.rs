//! Pure decisions of the executor: which interface carries an address.

/// The first of `ifaces` (in listed order: the public_addresses line's
/// order is the operator's preference) for which `usable` is true; `None`
/// when no listed interface is usable, i.e. this node cannot host the
/// address.
pub fn choose_interface(ifaces: &[String], usable: impl Fn(&str) -> bool) -> Option<&str> {
    ifaces.iter().map(String::as_str).find(|i| usable(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_usable_in_listed_order() {
        let ifaces = names(&["eth1", "eth0", "bond0"]);
        assert_eq!(choose_interface(&ifaces, |_| true), Some("eth1"));
        assert_eq!(choose_interface(&ifaces, |i| i != "eth1"), Some("eth0"));
        assert_eq!(choose_interface(&ifaces, |i| i == "bond0"), Some("bond0"));
    }

    #[test]
    fn none_when_nothing_is_usable() {
        assert_eq!(choose_interface(&names(&["eth0"]), |_| false), None);
        assert_eq!(choose_interface(&[], |_| true), None);
    }
}
