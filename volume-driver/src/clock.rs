//! The node's clock for every safety decision the agent makes: `CLOCK_BOOTTIME`, which never
//! goes back, is not stepped by NTP or an operator, and — unlike `CLOCK_MONOTONIC` — keeps
//! counting while the machine is suspended. A lease measured on it therefore runs out during a
//! suspend or a freeze instead of resuming where it stopped. Wall-clock time is for display only.

use std::time::Duration;

/// Time since boot on `CLOCK_BOOTTIME`.
pub fn now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn it_never_goes_back() {
        let a = super::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(super::now() > a);
    }
}
