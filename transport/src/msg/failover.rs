//! failoverd's messages: hosted addresses, takeover runs, CLI requests.
