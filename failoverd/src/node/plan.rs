//! Pure decisions of the executor: which interface carries an address.

/// The first of `ifaces` (in listed order) for which `usable` is true.
pub fn choose_interface(ifaces: &[String], usable: impl Fn(&str) -> bool) -> Option<&str> {
    ifaces.iter().map(String::as_str).find(|i| usable(i))
}
