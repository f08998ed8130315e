//! How many calls this node takes at once, in all and per caller number, and
//! whether it takes any (not while draining). A call holds a ticket for as
//! long as it lasts; dropping the ticket frees the place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    NumberBusy,
    Draining,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::NumberBusy => "number_busy",
            Refusal::Draining => "draining",
        }
    }
}

#[derive(Default)]
pub struct Admission {
    /// 0: no limit.
    max_calls: usize,
    max_per_number: usize,
    draining: AtomicBool,
    state: Mutex<(usize, HashMap<String, usize>)>,
}

/// A place taken; freed on drop.
pub struct Ticket {
    adm: Arc<Admission>,
    number: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self.adm.state.lock();
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.number) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.1.remove(&self.number);
            }
        }
    }
}

impl Admission {
    pub fn new(max_calls: usize, max_per_number: usize) -> Arc<Self> {
        Arc::new(Self {
            max_calls,
            max_per_number,
            ..Default::default()
        })
    }

    /// Would a call from `number` be taken now? (Takes nothing.)
    pub fn check(&self, number: &str) -> Result<(), Refusal> {
        let g = self.state.lock();
        self.check_locked(&g, number)
    }

    fn check_locked(
        &self,
        g: &(usize, HashMap<String, usize>),
        number: &str,
    ) -> Result<(), Refusal> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Refusal::Draining);
        }
        if self.max_calls > 0 && g.0 >= self.max_calls {
            return Err(Refusal::Full);
        }
        // An unknown number (withheld caller ID) is not limited per number.
        let per = g.1.get(number).copied().unwrap_or(0);
        if !number.is_empty() && self.max_per_number > 0 && per >= self.max_per_number {
            return Err(Refusal::NumberBusy);
        }
        Ok(())
    }

    pub fn admit(self: &Arc<Self>, number: &str) -> Result<Ticket, Refusal> {
        let mut g = self.state.lock();
        self.check_locked(&g, number)?;
        g.0 += 1;
        *g.1.entry(number.to_string()).or_default() += 1;
        Ok(Ticket {
            adm: self.clone(),
            number: number.to_string(),
        })
    }

    /// Whether a new call (from a number with none yet) would be taken:
    /// not draining and not full. Readiness and SIP OPTIONS answer by it.
    pub fn accepting(&self) -> bool {
        self.check("").is_ok()
    }

    pub fn active(&self) -> usize {
        self.state.lock().0
    }

    /// From now on every new call is refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_number_and_frees_on_drop() {
        let a = Admission::new(3, 2);
        let t1 = a.admit("+1").unwrap();
        let _t2 = a.admit("+1").unwrap();
        assert_eq!(a.admit("+1").err(), Some(Refusal::NumberBusy));
        let _t3 = a.admit("+2").unwrap();
        assert_eq!(a.admit("+3").err(), Some(Refusal::Full));
        assert!(!a.accepting());
        drop(t1);
        assert!(a.accepting());
        assert_eq!(a.active(), 2);
        assert!(a.check("+1").is_ok());
        let _t4 = a.admit("").unwrap();
        a.start_draining();
        assert_eq!(a.check("+9").err(), Some(Refusal::Draining));
    }

    #[test]
    fn zero_means_unlimited() {
        let a = Admission::new(0, 0);
        let t: Vec<_> = (0..100).map(|_| a.admit("+1").unwrap()).collect();
        assert_eq!(a.active(), 100);
        drop(t);
        assert_eq!(a.active(), 0);
    }
}
