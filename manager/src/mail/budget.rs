//! `email_maxperhour`: the first N mails of a period leave one by one; the
//! overflow waits and leaves as one digest mail when the period ends
//! (OSSEC's maild sends what it queued at the hour change).
//!
//! Periods are aligned on multiples of their length since the Unix epoch,
//! so with the default one hour the budget renews at every hour change
//! (of UTC; the same in every zone whose offset is whole hours). Time is a
//! parameter (epoch ms) so the rules are tested without a clock.

use super::decide::Outgoing;

/// What became of a mail handed to the budget.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send it now.
    Send(Outgoing),
    /// It waits for the end of the period.
    Held,
    /// It waits; the oldest waiting mail was dropped to make room.
    HeldDroppedOldest,
}

/// The per-period counter and the mails waiting for the period's end.
#[derive(Debug)]
pub struct Budget {
    max: u32,
    period_ms: i64,
    /// The current period's index (`now / period_ms`).
    period: i64,
    /// Mails sent in the current period.
    sent: u32,
    held: Vec<Outgoing>,
    held_cap: usize,
}

impl Budget {
    /// `max` mails per period of `period_ms`; at most `held_cap` wait.
    pub fn new(max: u32, period_ms: i64, held_cap: usize, now_ms: i64) -> Self {
        let period_ms = period_ms.max(1);
        Self {
            max,
            period_ms,
            period: now_ms.div_euclid(period_ms),
            sent: 0,
            held: Vec::new(),
            held_cap: held_cap.max(1),
        }
    }

    /// Mails waiting for the period's end.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// When the current period ends (epoch ms).
    pub fn period_end(&self) -> i64 {
        (self.period + 1) * self.period_ms
    }

    /// Ends the period if `now_ms` is past it: the waiting mails come back
    /// as digests to send (one per recipient list, `do_not_group` mails on
    /// their own), and the count starts again.
    pub fn roll(&mut self, now_ms: i64) -> Vec<Outgoing> {
        let period = now_ms.div_euclid(self.period_ms);
        if period == self.period {
            return Vec::new();
        }
        self.period = period;
        self.sent = 0;
        digests(std::mem::take(&mut self.held))
    }

    /// Takes one mail (call [`Budget::roll`] first).
    pub fn admit(&mut self, mail: Outgoing) -> Admit {
        if mail.do_not_delay || self.sent < self.max {
            self.sent = self.sent.saturating_add(1);
            return Admit::Send(mail);
        }
        self.held.push(mail);
        if self.held.len() > self.held_cap {
            self.held.remove(0);
            return Admit::HeldDroppedOldest;
        }
        Admit::Held
    }
}

/// Groups waiting mails: one digest per recipient list, in arrival order,
/// with the subject of its highest-level mail (OSSEC's grouping).
pub fn digests(held: Vec<Outgoing>) -> Vec<Outgoing> {
    let mut out: Vec<Vec<Outgoing>> = Vec::new();
    for mail in held {
        if mail.do_not_group {
            out.push(vec![mail]);
            continue;
        }
        match out
            .iter_mut()
            .find(|g| !g[0].do_not_group && g[0].to == mail.to)
        {
            Some(group) => group.push(mail),
            None => out.push(vec![mail]),
        }
    }
    out.into_iter()
        .filter_map(|group| {
            let top = group.iter().max_by_key(|m| m.level)?;
            Some(Outgoing {
                to: top.to.clone(),
                subject: top.subject.clone(),
                level: top.level,
                do_not_delay: false,
                do_not_group: top.do_not_group,
                // The bodies one after the other, as OSSEC's maild joins
                // grouped messages.
                body: group.iter().map(|m| m.body.as_str()).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(n: u32, level: u32) -> Outgoing {
        Outgoing {
            to: vec!["ops@example.net".into()],
            subject: format!("subject {n}"),
            body: format!("body {n}\n"),
            level,
            do_not_delay: false,
            do_not_group: false,
        }
    }

    #[test]
    fn two_per_period_then_one_digest_of_the_rest() {
        let hour = 3_600_000;
        let start = 10 * hour + 5;
        let mut b = Budget::new(2, hour, 96, start);
        let mut sent = Vec::new();
        for n in 0..10 {
            match b.admit(mail(n, if n == 6 { 12 } else { 10 })) {
                Admit::Send(m) => sent.push(m),
                Admit::Held => {}
                Admit::HeldDroppedOldest => panic!("nothing should be dropped"),
            }
        }
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].subject, "subject 1");
        assert_eq!(b.held(), 8);
        assert_eq!(b.period_end(), 11 * hour);
        assert!(b.roll(11 * hour - 1).is_empty(), "the hour has not changed");
        let digest = b.roll(11 * hour);
        assert_eq!(digest.len(), 1);
        assert_eq!(
            digest[0].subject, "subject 6",
            "the highest level's subject"
        );
        assert_eq!(
            digest[0].body,
            (2..10).map(|n| format!("body {n}\n")).collect::<String>()
        );
        assert_eq!(b.held(), 0);
        // A new period: the count starts again.
        assert!(matches!(b.admit(mail(10, 10)), Admit::Send(_)));
    }

    #[test]
    fn do_not_delay_bypasses_the_budget_and_do_not_group_stays_alone() {
        let mut b = Budget::new(1, 1000, 96, 0);
        assert!(matches!(b.admit(mail(0, 10)), Admit::Send(_)));
        let urgent = Outgoing {
            do_not_delay: true,
            ..mail(1, 10)
        };
        assert!(matches!(b.admit(urgent), Admit::Send(_)));
        let alone = Outgoing {
            do_not_group: true,
            ..mail(2, 10)
        };
        assert_eq!(b.admit(alone), Admit::Held);
        assert_eq!(b.admit(mail(3, 10)), Admit::Held);
        let mut other = mail(4, 10);
        other.to = vec!["web@example.net".into()];
        assert_eq!(b.admit(other), Admit::Held);
        assert_eq!(b.admit(mail(5, 10)), Admit::Held);
        let out = b.roll(1000);
        let bodies: Vec<&str> = out.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["body 2\n", "body 3\nbody 5\n", "body 4\n"]);
    }

    #[test]
    fn the_oldest_waiting_mail_makes_room() {
        let mut b = Budget::new(1, 1000, 2, 0);
        assert!(matches!(b.admit(mail(0, 10)), Admit::Send(_)));
        assert_eq!(b.admit(mail(1, 10)), Admit::Held);
        assert_eq!(b.admit(mail(2, 10)), Admit::Held);
        assert_eq!(b.admit(mail(3, 10)), Admit::HeldDroppedOldest);
        let out = b.roll(5000);
        assert_eq!(out[0].body, "body 2\nbody 3\n");
    }
}
