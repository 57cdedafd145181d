//! The kernel's TCP counters a latency benchmark must show beside its figures.
//!
//! Owns reading `/proc/net/netstat` (Linux) for the counters that turn into latency
//! outliers no proxy causes: a connection whose handshake met a full accept queue
//! (`ListenOverflows`) has its SYN dropped and sent again after the initial retransmission
//! timeout, one second (`TCPSynRetrans`); so does any segment lost to a timeout
//! (`TCPTimeouts`). On loopback none of these should happen; when they do, a request's
//! latency of about one second is the kernel's, and `bench-overhead` says so instead of
//! charging it to the variant. The counters are the whole machine's: they tell that it
//! happened during a variant, not to whose socket. Does not own the benchmark
//! (`overhead`).

/// The counters, at one instant or as a difference of two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Handshakes completed on a listener whose accept queue was full (the SYN is dropped).
    pub listen_overflows: u64,
    /// SYNs sent again: a connection waited for the retransmission timeout (1 s at first).
    pub syn_retransmits: u64,
    /// Retransmission timeouts of established connections.
    pub timeouts: u64,
}

impl TcpCounters {
    /// The machine's counters now; `None` where `/proc/net/netstat` cannot be read or
    /// lacks them (not Linux, a sandbox).
    pub fn read() -> Option<TcpCounters> {
        let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
        TcpCounters::parse(&text)
    }

    /// Reads the `TcpExt:` header line and its value line (the format of
    /// `/proc/net/netstat`: a line of names, then a line of numbers, per protocol).
    pub fn parse(text: &str) -> Option<TcpCounters> {
        let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let names = lines.next()?.split_whitespace().skip(1);
        let values = lines.next()?.split_whitespace().skip(1);
        let mut found = [None; 3];
        for (name, value) in names.zip(values) {
            let slot = match name {
                "ListenOverflows" => 0,
                "TCPSynRetrans" => 1,
                "TCPTimeouts" => 2,
                _ => continue,
            };
            found[slot] = value.parse::<u64>().ok();
        }
        Some(TcpCounters {
            listen_overflows: found[0]?,
            syn_retransmits: found[1]?,
            timeouts: found[2]?,
        })
    }

    /// What happened between `earlier` and this reading (a counter that went back, as
    /// in a new network namespace, counts as nothing).
    pub fn since(self, earlier: TcpCounters) -> TcpCounters {
        TcpCounters {
            listen_overflows: self
                .listen_overflows
                .saturating_sub(earlier.listen_overflows),
            syn_retransmits: self.syn_retransmits.saturating_sub(earlier.syn_retransmits),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
        }
    }

    /// The sum of two differences.
    pub fn plus(self, other: TcpCounters) -> TcpCounters {
        TcpCounters {
            listen_overflows: self.listen_overflows + other.listen_overflows,
            syn_retransmits: self.syn_retransmits + other.syn_retransmits,
            timeouts: self.timeouts + other.timeouts,
        }
    }

    /// Whether any of them moved.
    pub fn any(self) -> bool {
        self != TcpCounters::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts TCPSynRetrans\n\
TcpExt: 0 17 17 15 13\n\
IpExt: InNoRoutes InTruncatedPkts\n\
IpExt: 0 0\n";

    #[test]
    fn the_counters_are_read_by_name_from_the_tcpext_lines() {
        assert_eq!(
            TcpCounters::parse(NETSTAT),
            Some(TcpCounters {
                listen_overflows: 17,
                syn_retransmits: 13,
                timeouts: 15
            })
        );
    }

    #[test]
    fn a_missing_counter_or_section_reads_as_unknown() {
        assert_eq!(TcpCounters::parse("IpExt: A\nIpExt: 1\n"), None);
        assert_eq!(
            TcpCounters::parse("TcpExt: ListenOverflows TCPTimeouts\nTcpExt: 1 2\n"),
            None
        );
        assert_eq!(
            TcpCounters::parse("TcpExt: ListenOverflows TCPSynRetrans TCPTimeouts\n"),
            None
        );
        assert_eq!(
            TcpCounters::parse(
                "TcpExt: ListenOverflows TCPSynRetrans TCPTimeouts\nTcpExt: x 1 2\n"
            ),
            None
        );
    }

    #[test]
    fn differences_never_go_below_zero_and_add_up() {
        let a = TcpCounters {
            listen_overflows: 5,
            syn_retransmits: 2,
            timeouts: 9,
        };
        let b = TcpCounters {
            listen_overflows: 7,
            syn_retransmits: 2,
            timeouts: 3,
        };
        let d = b.since(a);
        assert_eq!(
            d,
            TcpCounters {
                listen_overflows: 2,
                syn_retransmits: 0,
                timeouts: 0
            }
        );
        assert!(d.any());
        assert!(!a.since(a).any());
        assert_eq!(d.plus(d).listen_overflows, 4);
    }

    #[test]
    fn this_machine_has_them_if_it_is_linux() {
        if cfg!(target_os = "linux") && std::path::Path::new("/proc/net/netstat").exists() {
            assert!(TcpCounters::read().is_some());
        }
    }
}
