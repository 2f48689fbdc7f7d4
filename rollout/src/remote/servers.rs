//! Which server takes the next group: the one with the fewest requests in flight, among those
//! not set aside. A server that fails `failures_to_set_aside` requests in a row is set aside for
//! a while (doubling each time, up to `max_set_aside`) and then tried again; one success clears
//! its record. Pure bookkeeping: the clock is passed in, so the rules are tested without waiting.

use std::time::{Duration, Instant};

/// The rules for setting a failing server aside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SetAsideRules {
    pub failures_to_set_aside: u32,
    pub first_set_aside: Duration,
    pub max_set_aside: Duration,
}

#[derive(Debug)]
struct Server {
    in_flight: usize,
    failures_in_a_row: u32,
    /// Times it was set aside since its last success (the next pause doubles with it).
    set_asides: u32,
    back_at: Option<Instant>,
    /// It may not serve the current weights (it failed a request, so it may have restarted, or
    /// it missed a weight sync): it must load them again and pass the check before its next group.
    stale: bool,
}

#[derive(Debug)]
pub struct Servers {
    servers: Vec<Server>,
    rules: SetAsideRules,
}

/// What [`Servers::release`] saw happen to a server.
#[derive(Debug, Clone, PartialEq)]
pub enum Released {
    Fine,
    /// The server failed, and stays in use.
    Failed,
    /// The server failed once too often in a row and is set aside for this long.
    SetAside(Duration),
}

impl Servers {
    /// `count` servers, known by their position.
    pub fn new(count: usize, rules: SetAsideRules) -> Self {
        let servers = (0..count)
            .map(|_| Server { in_flight: 0, failures_in_a_row: 0, set_asides: 0, back_at: None, stale: false })
            .collect();
        Self { servers, rules }
    }

    /// Takes the least loaded server in use at `now` (counting the request about to be sent), or
    /// says how long until a set-aside one is back when all are set aside.
    pub fn acquire(&mut self, now: Instant) -> Result<usize, Duration> {
        let usable = |s: &Server| s.back_at.is_none_or(|t| t <= now);
        match self.servers.iter().enumerate().filter(|(_, s)| usable(s)).min_by_key(|(i, s)| (s.in_flight, *i)) {
            Some((i, _)) => {
                self.servers[i].back_at = None;
                self.servers[i].in_flight += 1;
                Ok(i)
            }
            None => {
                Err(self.servers.iter().filter_map(|s| s.back_at).min().expect("all set aside").duration_since(now))
            }
        }
    }

    /// Records how the request sent to `server` went.
    pub fn release(&mut self, server: usize, ok: bool, now: Instant) -> Released {
        let rules = self.rules;
        let s = &mut self.servers[server];
        s.in_flight -= 1;
        if ok {
            s.failures_in_a_row = 0;
            s.set_asides = 0;
            return Released::Fine;
        }
        s.failures_in_a_row += 1;
        s.stale = true;
        if s.failures_in_a_row < rules.failures_to_set_aside || s.back_at.is_some() {
            return Released::Failed;
        }
        let pause = rules.first_set_aside.saturating_mul(1 << s.set_asides.min(16)).min(rules.max_set_aside);
        s.failures_in_a_row = 0;
        s.set_asides += 1;
        s.back_at = Some(now + pause);
        Released::SetAside(pause)
    }

    pub fn is_stale(&self, server: usize) -> bool {
        self.servers[server].stale
    }

    pub fn set_stale(&mut self, server: usize, stale: bool) {
        self.servers[server].stale = stale;
    }

    /// Requests in flight on each server.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.servers.iter().map(|s| s.in_flight).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Servers {
        Servers::new(
            n,
            SetAsideRules {
                failures_to_set_aside: 2,
                first_set_aside: Duration::from_secs(1),
                max_set_aside: Duration::from_secs(3),
            },
        )
    }

    #[test]
    fn groups_go_to_the_least_loaded_server() {
        let mut s = servers(3);
        let now = Instant::now();
        let picks: Vec<usize> = (0..6).map(|_| s.acquire(now).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        s.release(1, true, now);
        s.release(1, true, now);
        assert_eq!(s.acquire(now), Ok(1));
        assert_eq!(s.loads(), vec![2, 1, 2]);
    }

    #[test]
    fn a_failing_server_is_set_aside_then_tried_again() {
        let mut s = servers(2);
        let t0 = Instant::now();
        for expected in [Released::Failed, Released::SetAside(Duration::from_secs(1))] {
            let i = s.acquire(t0).unwrap();
            assert_eq!(i, 0);
            assert_eq!(s.release(i, false, t0), expected);
        }
        // Server 0 is out: everything goes to 1 while it is.
        assert_eq!(s.acquire(t0), Ok(1));
        assert_eq!(s.acquire(t0), Ok(1));
        s.release(1, true, t0);
        s.release(1, true, t0);
        // Back after its pause; failing twice more doubles the pause, capped at 3 s.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(s.acquire(t1), Ok(0));
        s.release(0, false, t1);
        assert_eq!(s.acquire(t1), Ok(0));
        assert_eq!(s.release(0, false, t1), Released::SetAside(Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(s.acquire(t2), Ok(0));
        assert_eq!(s.release(0, false, t2), Released::Failed);
        assert_eq!(s.acquire(t2), Ok(0));
        assert_eq!(s.release(0, false, t2), Released::SetAside(Duration::from_secs(3)));
        // A success clears the record.
        let t3 = t2 + Duration::from_secs(3);
        assert_eq!(s.acquire(t3), Ok(0));
        s.release(0, true, t3);
        assert_eq!(s.acquire(t3), Ok(0));
        assert_eq!(s.release(0, false, t3), Released::Failed);
    }

    #[test]
    fn when_all_are_set_aside_the_wait_is_until_the_first_is_back() {
        let mut s = servers(2);
        let t0 = Instant::now();
        for _ in 0..2 {
            s.acquire(t0).unwrap();
            s.acquire(t0).unwrap();
            s.release(0, false, t0);
            s.release(1, false, t0);
        }
        assert_eq!(s.acquire(t0), Err(Duration::from_secs(1)));
        assert_eq!(s.acquire(t0 + Duration::from_millis(400)), Err(Duration::from_millis(600)));
    }
}
