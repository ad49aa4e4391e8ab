//! The host's lock table: which local jobs hold or wait for each advisory
//! key, in front of the server. PostgreSQL stacks a session's own locks, so
//! once one session carries many jobs' locks only this table keeps two local
//! jobs from holding conflicting modes at once. It also orders local waiters
//! (FIFO) and refuses a wait that would close a cycle among local jobs.
//!
//! Pure bookkeeping: no I/O, no clock, no async. A waiter is woken by handing
//! back the value `W` it queued with (the engine's is a oneshot sender), so
//! the table can be checked against a model deterministically. See
//! `docs/design/sessions.md` for the invariants it keeps.

use std::collections::{HashMap, HashSet, VecDeque};

use super::LockMode;

/// A job, as the table knows it.
pub(crate) type JobId = u64;

/// A session, as the table knows it (each session gets a number when it opens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionId(pub(crate) u64);

/// Identifies one queued request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Ticket(u64);

/// What [`LockTable::enter`] decided.
#[derive(Debug)]
pub(crate) enum Entered {
    /// No local conflict: the job holds the key locally and may ask the server.
    Admitted,
    /// Queued behind a local holder or waiter; woken through its `W`.
    Queued(Ticket),
    /// Waiting would close a cycle among local jobs: refused.
    Deadlock,
}

/// What became of a queued request that its job gave up on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Withdrawn {
    /// It was still queued and is gone now.
    Dequeued,
    /// It had been admitted meanwhile: the job holds the key locally and must
    /// [`LockTable::leave`] it.
    WasAdmitted,
}

struct Holder {
    job: JobId,
    mode: LockMode,
    /// Where the server lock is, once granted there.
    session: Option<SessionId>,
    /// Released by its job, the unlock on its way to the server: it still
    /// keeps conflicting requests out, but waits for nobody, so it is never
    /// part of a wait-for cycle.
    releasing: bool,
}

struct Waiter<W> {
    ticket: Ticket,
    job: JobId,
    mode: LockMode,
    wake: W,
}

struct Entry<W> {
    holders: Vec<Holder>,
    waiters: VecDeque<Waiter<W>>,
}

impl<W> Default for Entry<W> {
    fn default() -> Self {
        Self { holders: Vec::new(), waiters: VecDeque::new() }
    }
}

/// The table. One per host, behind a mutex; every operation is short.
pub(crate) struct LockTable<W> {
    entries: HashMap<i64, Entry<W>>,
    /// Which key each queued job waits for (a job waits for one at a time).
    waiting: HashMap<JobId, (i64, Ticket)>,
    /// Which tickets were admitted after queueing and not yet collected by
    /// their job (see [`LockTable::withdraw`]).
    admitted_tickets: HashSet<Ticket>,
    next_ticket: u64,
}

impl<W> Default for LockTable<W> {
    fn default() -> Self {
        Self { entries: HashMap::new(), waiting: HashMap::new(), admitted_tickets: HashSet::new(), next_ticket: 0 }
    }
}

fn compatible(a: LockMode, b: LockMode) -> bool {
    a == LockMode::Shared && b == LockMode::Shared
}

impl<W> LockTable<W> {
    /// `job` asks for `key` in `mode`. Admitted when no other local job holds
    /// a conflicting mode and nobody is queued; queued otherwise, unless
    /// waiting would close a cycle.
    pub(crate) fn enter(&mut self, key: i64, job: JobId, mode: LockMode, wake: W) -> Entered {
        let entry = self.entries.entry(key).or_default();
        let free = entry.waiters.is_empty() && entry.holders.iter().all(|h| h.job == job || compatible(h.mode, mode));
        if free {
            entry.holders.push(Holder { job, mode, session: None, releasing: false });
            return Entered::Admitted;
        }
        if self.would_close_cycle(key, job, mode) {
            self.forget_if_empty(key);
            return Entered::Deadlock;
        }
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        let entry = self.entries.entry(key).or_default();
        entry.waiters.push_back(Waiter { ticket, job, mode, wake });
        self.waiting.insert(job, (key, ticket));
        Entered::Queued(ticket)
    }

    /// Like [`Self::enter`] for a try: admitted, or `false` without queuing.
    pub(crate) fn try_enter(&mut self, key: i64, job: JobId, mode: LockMode) -> bool {
        let entry = self.entries.entry(key).or_default();
        let free = entry.waiters.is_empty() && entry.holders.iter().all(|h| h.job == job || compatible(h.mode, mode));
        if free {
            entry.holders.push(Holder { job, mode, session: None, releasing: false });
        } else {
            self.forget_if_empty(key);
        }
        free
    }

    /// Records where the server granted a local holder's lock.
    pub(crate) fn granted_on(&mut self, key: i64, job: JobId, mode: LockMode, session: SessionId) {
        if let Some(holder) = self
            .entries
            .get_mut(&key)
            .and_then(|e| e.holders.iter_mut().find(|h| h.job == job && h.mode == mode && h.session.is_none()))
        {
            holder.session = Some(session);
        }
    }

    /// `job` released `key` in `mode`; the unlock is on its way to the
    /// server, and [`Self::leave_released`] follows when it has arrived.
    pub(crate) fn mark_releasing(&mut self, key: i64, job: JobId, mode: LockMode) {
        if let Some(holder) = self
            .entries
            .get_mut(&key)
            .and_then(|e| e.holders.iter_mut().find(|h| h.job == job && h.mode == mode && !h.releasing))
        {
            holder.releasing = true;
        }
    }

    /// `job` no longer holds `key` in `mode` (failed at the server, or its
    /// job ended). Returns the waiters it lets in.
    #[must_use = "the returned waiters must be woken"]
    pub(crate) fn leave(&mut self, key: i64, job: JobId, mode: LockMode) -> Vec<W> {
        self.remove_holder(key, job, mode, false)
    }

    /// The unlock of a grant marked releasing reached the server.
    #[must_use = "the returned waiters must be woken"]
    pub(crate) fn leave_released(&mut self, key: i64, job: JobId, mode: LockMode) -> Vec<W> {
        self.remove_holder(key, job, mode, true)
    }

    /// Removes one holder entry of `job` in `mode` whose `releasing` mark is
    /// as given (a job may have a grant being released and a new one of the
    /// same pair at once), and admits whoever fits now.
    fn remove_holder(&mut self, key: i64, job: JobId, mode: LockMode, releasing: bool) -> Vec<W> {
        let Some(entry) = self.entries.get_mut(&key) else {
            return Vec::new();
        };
        let at = entry.holders.iter().position(|h| h.job == job && h.mode == mode && h.releasing == releasing);
        if let Some(at) = at {
            entry.holders.swap_remove(at);
        }
        self.admit_waiters(key)
    }

    /// Gives up a queued request (its job timed out or went away).
    #[must_use = "the returned waiters must be woken"]
    pub(crate) fn withdraw(&mut self, key: i64, job: JobId, ticket: Ticket) -> (Withdrawn, Vec<W>) {
        if self.admitted_tickets.remove(&ticket) {
            return (Withdrawn::WasAdmitted, Vec::new());
        }
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.waiters.retain(|w| w.ticket != ticket);
        }
        if self.waiting.get(&job).is_some_and(|&(_, t)| t == ticket) {
            self.waiting.remove(&job);
        }
        // Whoever queued behind it may fit now.
        (Withdrawn::Dequeued, self.admit_waiters(key))
    }

    /// The job has seen that its queued request was admitted.
    pub(crate) fn collect(&mut self, ticket: Ticket) {
        self.admitted_tickets.remove(&ticket);
    }

    /// A session ended: the server freed every lock on it, so its holders
    /// leave the table. Returns the waiters that fit now.
    #[must_use = "the returned waiters must be woken"]
    pub(crate) fn drop_session(&mut self, session: SessionId) -> Vec<W> {
        let keys: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.holders.iter().any(|h| h.session == Some(session)))
            .map(|(&k, _)| k)
            .collect();
        let mut woken = Vec::new();
        for key in keys {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.holders.retain(|h| h.session != Some(session));
            }
            woken.extend(self.admit_waiters(key));
        }
        woken
    }

    /// Admits queued waiters from the head while they fit.
    fn admit_waiters(&mut self, key: i64) -> Vec<W> {
        let mut woken = Vec::new();
        if let Some(entry) = self.entries.get_mut(&key) {
            while let Some(head) = entry.waiters.front() {
                let fits = entry.holders.iter().all(|h| h.job == head.job || compatible(h.mode, head.mode));
                if !fits {
                    break;
                }
                let Some(waiter) = entry.waiters.pop_front() else { break };
                entry.holders.push(Holder { job: waiter.job, mode: waiter.mode, session: None, releasing: false });
                self.waiting.remove(&waiter.job);
                self.admitted_tickets.insert(waiter.ticket);
                woken.push(waiter.wake);
            }
        }
        self.forget_if_empty(key);
        woken
    }

    fn forget_if_empty(&mut self, key: i64) {
        if self.entries.get(&key).is_some_and(|e| e.holders.is_empty() && e.waiters.is_empty()) {
            self.entries.remove(&key);
        }
    }

    /// The jobs `job` would wait for if it queued for `key` in `mode`: the
    /// conflicting holders and everyone queued ahead of it.
    fn blockers(&self, key: i64, job: JobId, mode: LockMode, ahead_of: Option<Ticket>) -> Vec<JobId> {
        let Some(entry) = self.entries.get(&key) else {
            return Vec::new();
        };
        let holders =
            entry.holders.iter().filter(|h| h.job != job && !h.releasing && !compatible(h.mode, mode)).map(|h| h.job);
        let ahead = entry.waiters.iter().take_while(|w| Some(w.ticket) != ahead_of).map(|w| w.job);
        holders.chain(ahead).filter(|&j| j != job).collect()
    }

    /// Whether `job` waiting for `key` would wait, through other waiting
    /// jobs, for itself.
    fn would_close_cycle(&self, key: i64, job: JobId, mode: LockMode) -> bool {
        let mut seen = HashSet::new();
        let mut stack = self.blockers(key, job, mode, None);
        while let Some(other) = stack.pop() {
            if other == job {
                return true;
            }
            if !seen.insert(other) {
                continue;
            }
            if let Some(&(waits_for, ticket)) = self.waiting.get(&other) {
                let other_mode = self
                    .entries
                    .get(&waits_for)
                    .and_then(|e| e.waiters.iter().find(|w| w.ticket == ticket))
                    .map_or(LockMode::Exclusive, |w| w.mode);
                stack.extend(self.blockers(waits_for, other, other_mode, Some(ticket)));
            }
        }
        false
    }

    /// Local holders of `key` and their modes (tests and the dashboard).
    #[cfg(test)]
    pub(crate) fn holders(&self, key: i64) -> Vec<(JobId, LockMode)> {
        self.entries.get(&key).map(|e| e.holders.iter().map(|h| (h.job, h.mode)).collect()).unwrap_or_default()
    }

    /// Whether the table holds nothing at all.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockMode::{Exclusive, Shared};

    #[test]
    fn a_second_exclusive_queues_and_is_admitted_on_leave() {
        let mut t = LockTable::<&str>::default();
        assert!(matches!(t.enter(1, 10, Exclusive, "a"), Entered::Admitted));
        let Entered::Queued(ticket) = t.enter(1, 11, Exclusive, "b") else { panic!("queued") };
        assert_eq!(t.leave(1, 10, Exclusive), vec!["b"]);
        t.collect(ticket);
        assert_eq!(t.holders(1), vec![(11, Exclusive)]);
        let woken = t.leave(1, 11, Exclusive);
        assert!(woken.is_empty() && t.is_empty());
    }

    #[test]
    fn shared_holders_coexist_and_a_queued_exclusive_keeps_later_shared_out() {
        let mut t = LockTable::<u32>::default();
        assert!(matches!(t.enter(1, 1, Shared, 0), Entered::Admitted));
        assert!(matches!(t.enter(1, 2, Shared, 0), Entered::Admitted));
        assert!(matches!(t.enter(1, 3, Exclusive, 3), Entered::Queued(_)));
        // FIFO: a shared request does not overtake the queued exclusive one.
        assert!(matches!(t.enter(1, 4, Shared, 4), Entered::Queued(_)));
        assert!(t.leave(1, 1, Shared).is_empty());
        assert_eq!(t.leave(1, 2, Shared), vec![3]);
        assert_eq!(t.leave(1, 3, Exclusive), vec![4]);
    }

    /// The twin of the test above: without a conflict nothing queues.
    #[test]
    fn a_job_does_not_conflict_with_itself() {
        let mut t = LockTable::<u32>::default();
        assert!(matches!(t.enter(1, 1, Shared, 0), Entered::Admitted));
        assert!(matches!(t.enter(1, 1, Exclusive, 0), Entered::Admitted));
    }

    #[test]
    fn a_local_cycle_is_refused() {
        let mut t = LockTable::<u32>::default();
        assert!(matches!(t.enter(1, 1, Exclusive, 0), Entered::Admitted));
        assert!(matches!(t.enter(2, 2, Exclusive, 0), Entered::Admitted));
        assert!(matches!(t.enter(2, 1, Exclusive, 1), Entered::Queued(_)));
        assert!(matches!(t.enter(1, 2, Exclusive, 2), Entered::Deadlock));
        // Control: a third job waiting for key 1 closes no cycle.
        assert!(matches!(t.enter(1, 3, Exclusive, 3), Entered::Queued(_)));
    }

    /// A job that released a key (its unlock still on the way) and asks for
    /// it again behind a queued waiter is not in a cycle with that waiter:
    /// the releasing entry waits for nobody. The twin: had it not been
    /// released, the same requests would be a cycle.
    #[test]
    fn a_grant_being_released_is_not_part_of_a_cycle() {
        let mut t = LockTable::<u32>::default();
        assert!(matches!(t.enter(1, 1, Exclusive, 0), Entered::Admitted));
        assert!(matches!(t.enter(1, 2, Exclusive, 2), Entered::Queued(_)));
        t.mark_releasing(1, 1, Exclusive);
        assert!(matches!(t.enter(1, 1, Exclusive, 1), Entered::Queued(_)));
        assert_eq!(t.leave_released(1, 1, Exclusive), vec![2]);
        assert_eq!(t.leave(1, 2, Exclusive), vec![1]);

        let mut twin = LockTable::<u32>::default();
        assert!(matches!(twin.enter(1, 1, Exclusive, 0), Entered::Admitted));
        assert!(matches!(twin.enter(1, 2, Exclusive, 2), Entered::Queued(_)));
        assert!(matches!(twin.enter(1, 1, Exclusive, 1), Entered::Deadlock));
    }

    #[test]
    fn a_lost_session_lets_the_waiters_in() {
        let mut t = LockTable::<u32>::default();
        assert!(matches!(t.enter(1, 1, Exclusive, 0), Entered::Admitted));
        t.granted_on(1, 1, Exclusive, SessionId(7));
        assert!(matches!(t.enter(1, 2, Exclusive, 2), Entered::Queued(_)));
        assert!(t.drop_session(SessionId(8)).is_empty(), "another session: nothing moves");
        assert_eq!(t.drop_session(SessionId(7)), vec![2]);
    }

    #[test]
    fn a_withdrawn_head_lets_compatible_waiters_behind_it_in() {
        let mut t = LockTable::<u32>::default();
        assert!(matches!(t.enter(1, 1, Shared, 0), Entered::Admitted));
        let Entered::Queued(x) = t.enter(1, 2, Exclusive, 2) else { panic!("queued") };
        assert!(matches!(t.enter(1, 3, Shared, 3), Entered::Queued(_)));
        let (withdrawn, woken) = t.withdraw(1, 2, x);
        assert_eq!(withdrawn, Withdrawn::Dequeued);
        assert_eq!(woken, vec![3]);
    }

    /// The table against a plain reference under random interleavings of
    /// acquire, try, timeout (withdraw), release, cancel and lost sessions.
    /// The reference keeps, per job, what it holds and what it waits for;
    /// after every step: no conflicting holders, no waiter that could be let
    /// in is left waiting at the head, every refused wait really closed a
    /// cycle, and every woken waiter is one that was queued.
    #[test]
    fn model_random_interleavings() {
        use rand::{Rng, SeedableRng};
        const JOBS: u64 = 6;
        const KEYS: i64 = 3;
        let mut refusals = 0;
        let mut wakes = 0;
        for seed in 0..400u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut t = LockTable::<(JobId, Ticket)>::default();
            // Reference: holds per job (key, mode, session), and the one wait.
            let mut holds: HashMap<JobId, Vec<(i64, LockMode, Option<SessionId>)>> = HashMap::new();
            let mut waits: HashMap<JobId, (i64, LockMode, Ticket)> = HashMap::new();
            for _step in 0..200 {
                let job = rng.random_range(1..=JOBS);
                let key = rng.random_range(0..KEYS);
                let mode = if rng.random_bool(0.5) { Exclusive } else { Shared };
                let woken: Vec<(JobId, Ticket)> = match rng.random_range(0..6) {
                    // acquire or try (a try that would queue withdraws at once)
                    // (a job asks the table once per key and mode: the engine
                    // stacks its further grants of the pair itself)
                    0 | 1
                        if !waits.contains_key(&job)
                            && !holds.get(&job).is_some_and(|h| h.iter().any(|h| h.0 == key && h.1 == mode)) =>
                    {
                        if rng.random_bool(0.3) {
                            if t.try_enter(key, job, mode) {
                                holds.entry(job).or_default().push((key, mode, None));
                            }
                            check(&t, &holds, &waits, seed);
                            continue;
                        }
                        let next = Ticket(t.next_ticket + 1);
                        match t.enter(key, job, mode, (job, next)) {
                            Entered::Admitted => {
                                holds.entry(job).or_default().push((key, mode, None));
                                Vec::new()
                            }
                            Entered::Queued(ticket) => {
                                waits.insert(job, (key, mode, ticket));
                                Vec::new()
                            }
                            Entered::Deadlock => {
                                refusals += 1;
                                assert!(reference_cycle(&holds, &waits, job, key, mode), "seed {seed}: false deadlock");
                                Vec::new()
                            }
                        }
                    }
                    // granted at the server on a session
                    2 => {
                        if let Some(h) = holds.get_mut(&job).and_then(|h| h.iter_mut().find(|h| h.2.is_none())) {
                            let session = SessionId(rng.random_range(0..3));
                            t.granted_on(h.0, job, h.1, session);
                            h.2 = Some(session);
                        }
                        Vec::new()
                    }
                    // release one
                    3 => match holds.get_mut(&job).filter(|h| !h.is_empty()) {
                        Some(h) => {
                            let (k, m, _) = h.swap_remove(rng.random_range(0..h.len()));
                            t.leave(k, job, m)
                        }
                        None => Vec::new(),
                    },
                    // timeout or cancel of a wait
                    4 => match waits.remove(&job) {
                        Some((k, m, ticket)) => {
                            let (w, woken) = t.withdraw(k, job, ticket);
                            if w == Withdrawn::WasAdmitted {
                                panic!("seed {seed}: a waiter admitted without being woken");
                            }
                            let _ = m;
                            woken
                        }
                        None => Vec::new(),
                    },
                    // a session is lost
                    _ => {
                        let session = SessionId(rng.random_range(0..3));
                        for h in holds.values_mut() {
                            h.retain(|h| h.2 != Some(session));
                        }
                        t.drop_session(session)
                    }
                };
                for (woken_job, ticket) in woken {
                    wakes += 1;
                    let (k, m, t0) = waits.remove(&woken_job).expect("woken job was waiting");
                    assert_eq!(t0, ticket);
                    t.collect(ticket);
                    holds.entry(woken_job).or_default().push((k, m, None));
                }
                check(&t, &holds, &waits, seed);
            }
        }
        assert!(refusals > 0, "the deadlock branch ran");
        assert!(wakes > 0, "the wake-up branch ran");
    }

    fn check(
        t: &LockTable<(JobId, Ticket)>,
        holds: &HashMap<JobId, Vec<(i64, LockMode, Option<SessionId>)>>,
        waits: &HashMap<JobId, (i64, LockMode, Ticket)>,
        seed: u64,
    ) {
        for key in 0..3 {
            let mut ref_holders: Vec<(JobId, LockMode)> =
                holds.iter().flat_map(|(&j, h)| h.iter().filter(|h| h.0 == key).map(move |h| (j, h.1))).collect();
            let mut table_holders = t.holders(key);
            ref_holders.sort_by_key(|h| (h.0, h.1 == Exclusive));
            table_holders.sort_by_key(|h| (h.0, h.1 == Exclusive));
            assert_eq!(ref_holders, table_holders, "seed {seed}: holders of {key}");
            for (i, a) in ref_holders.iter().enumerate() {
                for b in &ref_holders[i + 1..] {
                    assert!(a.0 == b.0 || compatible(a.1, b.1), "seed {seed}: conflicting holders {a:?} {b:?}");
                }
            }
            if let Some(head) = t.entries.get(&key).and_then(|e| e.waiters.front()) {
                let fits = ref_holders.iter().all(|h| h.0 == head.job || compatible(h.1, head.mode));
                assert!(!fits, "seed {seed}: the head waiter of {key} could have been let in");
            }
        }
        assert_eq!(t.waiting.len(), waits.len(), "seed {seed}: waiters");
    }

    /// Brute force: does `job` waiting for `key` reach itself through the
    /// jobs it would wait for (conflicting holders, anyone queued)?
    fn reference_cycle(
        holds: &HashMap<JobId, Vec<(i64, LockMode, Option<SessionId>)>>,
        waits: &HashMap<JobId, (i64, LockMode, Ticket)>,
        job: JobId,
        key: i64,
        mode: LockMode,
    ) -> bool {
        let blockers = |j: JobId, k: i64, m: LockMode, ticket: Option<Ticket>| -> Vec<JobId> {
            let mut out: Vec<JobId> = holds
                .iter()
                .filter(|&(&h, hs)| h != j && hs.iter().any(|x| x.0 == k && !compatible(x.1, m)))
                .map(|(&h, _)| h)
                .collect();
            out.extend(
                waits
                    .iter()
                    .filter(|&(&w, x)| w != j && x.0 == k && ticket.is_none_or(|t| x.2.0 < t.0))
                    .map(|(&w, _)| w),
            );
            out
        };
        let mut seen = HashSet::new();
        let mut stack = blockers(job, key, mode, None);
        while let Some(o) = stack.pop() {
            if o == job {
                return true;
            }
            if seen.insert(o)
                && let Some(&(k, m, t)) = waits.get(&o)
            {
                stack.extend(blockers(o, k, m, Some(t)));
            }
        }
        false
    }
}
