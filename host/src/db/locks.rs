//! The lock engine: acquire (waiting, cancellable, time-limited), try-acquire,
//! release and `is_held`, all on the job's home session, behind the host's
//! lock table (see `docs/design/sessions.md`): a request enters the table
//! first and waits there for local holders; only then does it go to the
//! server, with a try on a shared home, or a wait on a dedicated one.
//!
//! A timed-out wait is cancelled with the session's cancel token and then
//! awaited to its end, because dropping the future would not stop the server
//! from granting the lock later. The cancel can race the grant (so can
//! `lock_timeout`'s 55P03), so after a cancelled wait the session asks
//! `pg_locks` whether it holds the key and unlocks it if so. What a late
//! cancel does to the statements after it is told in [`super::session`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::error::{code_of, sqlstate};
use super::job_session::{JobLocks, RELEASE_ALL_TIMEOUT};
use super::pool::{Checkout, SharedSession};
use super::stats::AcquireResult;
use super::table::{Entered, Ticket, Withdrawn};
use super::{Database, JobSession, LockError, Session};

/// How long a delivered cancel may take to end a lock wait before the
/// backend is terminated instead.
const CANCEL_TAKES_EFFECT: Duration = Duration::from_secs(5);

/// First and longest pause between tries of a job that waits for another
/// host from a shared session.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(25);

/// How an entity is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// One holder.
    Exclusive,
    /// Many holders, no exclusive one.
    Shared,
}

impl LockMode {
    /// The mode's name in `pg_locks.mode`.
    pub fn pg_name(self) -> &'static str {
        match self {
            LockMode::Exclusive => "ExclusiveLock",
            LockMode::Shared => "ShareLock",
        }
    }
}

/// Whether a job's grants draw fencing tokens. A worker that never reads one
/// (its component does not import `fencing-token`) is granted locks without
/// the sequence's `nextval`: one write less on the server per grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fencing {
    /// Each grant draws its token (the default).
    #[default]
    Drawn,
    /// No grant of the job draws one.
    Off,
}

/// Identifies one grant within its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantId(pub(crate) u64);

/// A granted lock, as handed to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Which grant of the job this is.
    pub id: GrantId,
    /// The locked entity.
    pub entity: Uuid,
    /// The advisory key it maps to.
    pub key: i64,
    /// How it is held.
    pub mode: LockMode,
    /// The fencing token (from `pinlock.fence`, read after the grant);
    /// `None` for a job with [`Fencing::Off`].
    pub fence: Option<u64>,
}

/// What the job keeps about a grant it holds.
pub(crate) struct Held {
    pub(crate) entity: Uuid,
    pub(crate) key: i64,
    pub(crate) mode: LockMode,
    pub(crate) granted_at: Instant,
}

impl JobSession {
    /// Waits for `entity` in `mode`, at most `timeout` (`None`: the host's
    /// default; zero: do not wait).
    pub async fn acquire(&self, entity: Uuid, mode: LockMode, timeout: Option<Duration>) -> Result<Grant, LockError> {
        let timeout = timeout.unwrap_or(self.db.settings.default_lock_timeout);
        let granted = match self.grant(entity, mode, timeout).await {
            Ok(None) => Err(LockError::Timeout),
            other => other,
        };
        self.db.counters.count_acquire(AcquireResult::of(&granted));
        granted?.ok_or(LockError::Timeout)
    }

    /// Takes `entity` in `mode` only if that is possible without waiting.
    pub async fn try_acquire(&self, entity: Uuid, mode: LockMode) -> Result<Option<Grant>, LockError> {
        let granted = self.grant(entity, mode, Duration::ZERO).await;
        self.db.counters.count_acquire(AcquireResult::of(&granted));
        granted
    }

    /// Grants `entity` in `mode`, waiting at most `timeout` (zero: `None`
    /// when taken, without waiting for anyone, for a session either). The
    /// wait for a session counts against `timeout`, and no wait outlives the
    /// job's deadline. A pair the job already holds is stacked locally.
    async fn grant(&self, entity: Uuid, mode: LockMode, timeout: Duration) -> Result<Option<Grant>, LockError> {
        let started = Instant::now();
        let deadline = self.bounded(tokio::time::Instant::now() + timeout);
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        if entity.is_nil() || entity.is_max() {
            return Err(LockError::InvalidInput(format!("{entity} is not a lockable entity")));
        }
        let limit = self.max_locks();
        if state.held.len() >= limit {
            return Err(LockError::LimitExceeded(format!("a job may hold at most {limit} locks")));
        }
        let try_only = timeout.is_zero();
        let session = state.session(&self.db, if try_only { Checkout::Now } else { Checkout::Until(deadline) }).await?;
        let key = match self.db.keys.key_for(entity, session).await {
            Ok(key) => key,
            Err(e) => return Err(state.record_failure(&e)),
        };
        let fencing = self.fencing();
        if state.counts.contains_key(&(key, mode)) {
            // Stacked on a grant the job holds: the server is not asked again.
            let fence = match fencing {
                // Boxed, as the rarer path: it keeps each lock call's future small.
                Fencing::Drawn => Some(Box::pin(next_fence(state)).await?),
                Fencing::Off => None,
            };
            return Ok(Some(record_grant(state, entity, key, mode, fence, started)));
        }
        // What the dashboard shows as waiting: in the host's table, then for the server.
        let waiting = (!try_only).then(|| state.activity.waiting(entity, key, mode));
        let Some(mut claim) = self.claim(key, mode, try_only, deadline).await? else {
            return Ok(None);
        };
        if let Some(via) = claim.via.take() {
            state.follow_unlock(via);
        }
        let fence = match state.shared_home().cloned() {
            Some(shared) => self.grant_from_shared(state, &shared, &mut claim, try_only, deadline).await?,
            // Boxed, as the rarer path: it keeps this future small.
            None => Box::pin(grant_from_dedicated(state, &self.db, key, mode, fencing, try_only, deadline)).await?,
        };
        drop(waiting);
        let Some(fence) = fence else { return Ok(None) };
        claim.keep();
        let fence = (fencing == Fencing::Drawn).then_some(fence);
        let grant = record_grant(state, entity, key, mode, fence, started);
        if let Ok(session) = state.pinned() {
            let id = session.id();
            self.db.table.with(|t| t.granted_on(key, self.job_id, mode, id));
        }
        Ok(Some(grant))
    }

    /// Enters the host's lock table for `key`: at once when no local job
    /// holds it in a conflicting mode, else after waiting in its queue until
    /// `deadline` (a try does not wait: `None`). The claim leaves the table
    /// again when dropped, unless kept.
    async fn claim(
        &self,
        key: i64,
        mode: LockMode,
        try_only: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Claim<'_>>, LockError> {
        let job = self.job_id;
        let claim = |queued| Claim { db: &self.db, key, job, mode, queued, via: None, kept: false };
        // The common case first: admitted at once, nothing allocated.
        if let Some(via) = self.db.table.try_enter(key, job, mode) {
            // Not `Claim { via, ..claim(None) }`: the temporary would be
            // dropped, and its `Drop` would leave the table again.
            let mut admitted = claim(None);
            admitted.via = via;
            return Ok(Some(admitted));
        }
        if try_only {
            return Ok(None);
        }
        let (wake, woken) = oneshot::channel();
        let ticket = match self.db.table.with(|t| t.enter(key, job, mode, wake)) {
            Entered::Admitted => return Ok(Some(claim(None))),
            Entered::Deadlock => return Err(LockError::Deadlock),
            Entered::Queued(ticket) => ticket,
        };
        let mut claim = claim(Some(ticket));
        match tokio::time::timeout_at(deadline, woken).await {
            Ok(Ok(via)) => {
                self.db.table.with(|t| t.collect(ticket));
                claim.queued = None;
                claim.via = via;
                if deadline <= tokio::time::Instant::now() {
                    return Err(LockError::Timeout);
                }
                Ok(Some(claim))
            }
            // Timed out (dropping the claim withdraws it), or the table went
            // away with the host.
            _ => Err(LockError::Timeout),
        }
    }

    /// The server side of a grant for a job whose home is shared: a try
    /// there; if another host holds the key, a wait on a dedicated session
    /// when the job holds nothing yet, else tries from the home until the
    /// deadline.
    async fn grant_from_shared(
        &self,
        state: &mut JobLocks,
        shared: &Arc<SharedSession>,
        claim: &mut Claim<'_>,
        try_only: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Option<u64>, LockError> {
        let cap = self.db.settings.max_locks_per_session;
        if shared.locks() >= cap {
            return Err(LockError::LimitExceeded(format!(
                "this host's shared database session carries its limit of {cap} locks"
            )));
        }
        let fencing = self.fencing();
        if let Some(fence) = try_on_shared(state, shared, claim, fencing).await? {
            return Ok(Some(fence));
        }
        if try_only {
            return Ok(None);
        }
        // Boxed, as the rarer path: it keeps each lock call's future small.
        Box::pin(self.wait_from_shared(state, shared, claim, deadline)).await
    }

    /// [`Self::grant_from_shared`] once another host holds the key: a wait
    /// on a dedicated session when the job holds nothing yet, else tries
    /// from the home until the deadline.
    async fn wait_from_shared(
        &self,
        state: &mut JobLocks,
        shared: &Arc<SharedSession>,
        claim: &mut Claim<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<u64>, LockError> {
        let (key, mode, fencing) = (claim.key, claim.mode, self.fencing());
        if state.counts.is_empty() {
            state.move_to_dedicated(&self.db, Checkout::Until(deadline)).await?;
            return grant_from_dedicated(state, &self.db, key, mode, fencing, false, deadline).await;
        }
        let mut pause = POLL_FIRST;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(LockError::Timeout);
            }
            let jitter = Duration::from_micros(rand::random_range(0..=pause.as_micros() as u64 / 2));
            tokio::time::sleep_until((now + pause + jitter).min(deadline)).await;
            state.admit()?;
            if let Some(fence) = try_on_shared(state, shared, claim, fencing).await? {
                return Ok(Some(fence));
            }
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Releases one grant. `Lost` when its session was lost before; that
    /// answer is also the guest's acknowledgement of the loss (see
    /// [`super::job_session`]: the job is fenced until every lost grant is
    /// released).
    pub async fn release(&self, id: GrantId) -> Result<(), LockError> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        // Turns the grants of a session found lost into lost ones.
        let _ = state.admit();
        if state.acknowledge_lost(id) {
            return Err(LockError::Lost);
        }
        let Some(held) = state.unhold(id) else {
            return Err(LockError::InvalidInput("this lock was already released".into()));
        };
        state.stats.holds.record(held.granted_at.elapsed());
        let pair = (held.key, held.mode);
        match state.counts.get_mut(&pair) {
            Some(count) if *count > 1 => {
                *count -= 1;
                return Ok(());
            }
            _ => {
                state.counts.remove(&pair);
            }
        }
        if let Some(shared) = state.shared_home().cloned() {
            self.db.table.with(|t| t.mark_releasing(held.key, self.job_id, held.mode));
            state.unlocking.push(release_on_shared(&self.db, shared, self.job_id, pair));
            return Ok(());
        }
        let session = state.pinned()?;
        // Boxed, as the rarer path (most jobs share their session): it keeps
        // each release call's future small.
        match Box::pin(unlock(session, held.key, held.mode)).await {
            // `false` only after a stale cancel hit the first attempt after
            // it had unlocked: released either way.
            Ok(_) => {
                self.db.table.leave_all(self.job_id, &[pair]);
                Ok(())
            }
            Err(e) => {
                let err = state.record_failure(&e);
                if !state.session_alive() {
                    // Gone with its session (this grant was in `held`, so
                    // the others are lost now): this one is released, lost.
                    state.acknowledge_lost(id);
                    return Err(LockError::Lost);
                }
                // Not released: the lock stays until the job ends (the
                // session is now suspect, so the end unlocks everything).
                Err(err)
            }
        }
    }

    /// Whether the grant is held: granted, not released, and its session is
    /// not known to be lost. Answers from memory, without a round trip.
    pub async fn is_held(&self, id: GrantId) -> bool {
        let state = self.state.lock().await;
        state.held.contains_key(&id) && state.session_alive()
    }
}

/// A claim on a key in the host's lock table, given back when dropped
/// (the wait timed out, the server did not grant, or the job's future was
/// dropped) unless [`Claim::keep`] was called.
struct Claim<'a> {
    db: &'a Arc<Database>,
    key: i64,
    job: u64,
    mode: LockMode,
    /// Still queued under this ticket.
    queued: Option<Ticket>,
    /// The shared session whose unlock let it in, if one did.
    via: Option<Arc<SharedSession>>,
    kept: bool,
}

impl Claim<'_> {
    /// The server granted it: the entry stays until the job releases it.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let (key, job, mode) = (self.key, self.job, self.mode);
        let queued = self.queued;
        self.db.table.wake(|t| match queued {
            None => t.leave(key, job, mode),
            Some(ticket) => {
                let (withdrawn, mut woken) = t.withdraw(key, job, ticket);
                if withdrawn == Withdrawn::WasAdmitted {
                    woken.extend(t.leave(key, job, mode));
                }
                woken
            }
        });
    }
}

/// The server side of a grant on a dedicated session: a try, or a
/// cancellable wait until `deadline`.
async fn grant_from_dedicated(
    state: &mut JobLocks,
    db: &Database,
    key: i64,
    mode: LockMode,
    fencing: Fencing,
    try_only: bool,
    deadline: tokio::time::Instant,
) -> Result<Option<u64>, LockError> {
    if try_only {
        try_lock(state, key, mode, fencing).await
    } else if deadline <= tokio::time::Instant::now() {
        // The job's deadline (or the session wait) used up the time: one
        // look without waiting, never a wait that needs cancelling.
        Ok(Some(try_lock(state, key, mode, fencing).await?.ok_or(LockError::Timeout)?))
    } else {
        Ok(Some(wait_for_grant(state, db, key, mode, fencing, deadline).await?))
    }
}

/// `pg_try_advisory_lock*` on a shared session. No grant may be left that
/// nobody tracks if the job goes away before the answer:
/// - exclusive: the try runs in the job's own task (no hop to another task).
///   Should the job's future be dropped while it is in flight, an unlock of
///   the key follows it on the same connection, so it runs right after the
///   try, and the claim stays in the host's table until it has. While the
///   claim is there no other job of this host holds or tries the key, so
///   that unlock can only undo this try's grant (or find nothing: no harm);
/// - shared: other jobs' shared claims on the key are compatible, so such an
///   unlock could undo another job's grant on the same session. The try runs
///   on a task of its own instead, which unlocks only what it was granted.
async fn try_on_shared(
    state: &mut JobLocks,
    shared: &Arc<SharedSession>,
    claim: &mut Claim<'_>,
    fencing: Fencing,
) -> Result<Option<u64>, LockError> {
    let (key, mode) = (claim.key, claim.mode);
    if mode == LockMode::Exclusive {
        let orphaned = Orphaned { claim, session: shared, armed: true };
        let result = shared
            .awaited(shared.client.query_one(shared.stmts.try_lock(mode, fencing), &[&key]))
            .await
            .and_then(|row| row.try_get::<_, Option<i64>>(0));
        orphaned.disarm();
        return match result {
            Ok(fence) => {
                if fence.is_some() {
                    shared.add_locks(1);
                }
                Ok(fence.map(|f| f as u64))
            }
            Err(e) => Err(state.record_failure(&e)),
        };
    }
    let (answer, answered) = oneshot::channel();
    let session = shared.clone();
    tokio::spawn(async move {
        let result = session
            .awaited(session.client.query_one(session.stmts.try_lock(mode, fencing), &[&key]))
            .await
            .and_then(|row| row.try_get::<_, Option<i64>>(0));
        if let Ok(Some(_)) = &result {
            session.add_locks(1);
        }
        if let Err(Ok(Some(_))) = answer.send(result) {
            // Nobody took the grant: give it back.
            if unlock(&session, key, mode).await.is_ok() {
                session.sub_locks(1);
            }
        }
    });
    match answered.await {
        Ok(Ok(fence)) => Ok(fence.map(|f| f as u64)),
        Ok(Err(e)) => Err(state.record_failure(&e)),
        Err(_task_gone) => Err(LockError::Unavailable("the lock statement's task ended without an answer".into())),
    }
}

/// An exclusive try in flight on a shared session; dropped armed (the job's
/// future went away mid-try), it keeps the claim in the host's table and
/// sends an unlock after the try (see [`try_on_shared`]).
struct Orphaned<'c, 'd, 's> {
    claim: &'c mut Claim<'d>,
    session: &'s Arc<SharedSession>,
    armed: bool,
}

impl Orphaned<'_, '_, '_> {
    /// The answer came: nothing to undo.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Orphaned<'_, '_, '_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let claim = &mut *self.claim;
        // The table entry now leaves once the unlock has run, not before.
        claim.kept = true;
        let (key, job, mode) = (claim.key, claim.job, claim.mode);
        let (db, session) = (claim.db.clone(), self.session.clone());
        db.counters.abandoned_tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (shutting down): closing the socket frees
            // every lock of the session.
            session.abort_connection();
            return;
        };
        runtime.spawn(async move {
            // `true` only if the try had granted it.
            if let Err(e) = unlock(&session, key, mode).await {
                tracing::warn!(error = %super::error::describe(&e), "unlock after an abandoned try failed; closing the session");
                db.pool.close_shared(&session).await;
            }
            db.table.wake(|t| t.leave(key, job, mode));
        });
    }
}

/// Sends the unlock of `pair` on a shared session without waiting for it
/// (the job's end waits for it, so no lock outlives the job's report); the
/// table lets local waiters in once the server has it. If the unlock fails
/// or goes unanswered for [`RELEASE_ALL_TIMEOUT`], whether the lock is held
/// is unknown: the session is closed. The returned
/// future goes to [`super::job_session::PendingUnlocks`], which polls it
/// once at once (that sends the unlock) and drives it to its end later.
fn release_on_shared(
    db: &Arc<Database>,
    shared: Arc<SharedSession>,
    job: u64,
    pair: (i64, LockMode),
) -> super::job_session::Unlocking {
    let db = db.clone();
    Box::pin(async move {
        let (key, mode) = pair;
        let unlocking = unlock_queued(&shared, key, mode);
        tokio::pin!(unlocking);
        // The first poll puts the unlock on the session's connection, so
        // whatever is sent there afterwards runs after it: the local waiters
        // it lets in may follow it on this session at once (one round trip
        // per hand-off instead of two). Anyone else queued on the server
        // is still granted first.
        let (answered, left) = match (&mut unlocking).now_or_never() {
            Some(answer) => (Some(answer), false),
            None => {
                db.table.unlock_sent(key, job, mode, &shared);
                // Bounded like the end-of-job unlock: the job reports only
                // after this, so a server that stopped answering must not
                // hold it up for good.
                let answered = tokio::time::timeout(RELEASE_ALL_TIMEOUT, unlocking).await.ok();
                db.table.unlock_answered(key);
                (answered, true)
            }
        };
        let failure = match answered {
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(super::error::describe(&e)),
            None => Some(format!("no answer within {RELEASE_ALL_TIMEOUT:?}")),
        };
        match failure {
            None => shared.sub_locks(1),
            Some(error) => {
                tracing::warn!(%error, "unlock on a shared session failed; closing it");
                db.pool.close_shared(&shared).await;
            }
        }
        if !left {
            db.table.wake(|t| t.leave_released(key, job, mode));
        }
    })
}

fn record_grant(
    state: &mut JobLocks,
    entity: Uuid,
    key: i64,
    mode: LockMode,
    fence: Option<u64>,
    started: Instant,
) -> Grant {
    let now = Instant::now();
    state.stats.waits.record(now - started);
    *state.counts.entry((key, mode)).or_insert(0) += 1;
    let id = state.next_grant_id();
    state.hold(id, Held { entity, key, mode, granted_at: now });
    Grant { id, entity, key, mode, fence }
}

/// A fencing token for a grant the session already holds on the server.
async fn next_fence(state: &mut JobLocks) -> Result<u64, LockError> {
    let session = state.pinned()?;
    let result = session.query_one(&session.stmts.next_fence, &[]).await;
    match result.and_then(|row| row.try_get::<_, i64>(0)) {
        Ok(fence) => Ok(fence as u64),
        Err(e) => Err(state.record_failure(&e)),
    }
}

/// The fencing token of a grant whose lock statement's answer was lost to a
/// stale cancel (0 when the job draws none).
async fn fence_after_the_fact(state: &mut JobLocks, fencing: Fencing) -> Result<u64, LockError> {
    match fencing {
        Fencing::Drawn => next_fence(state).await,
        Fencing::Off => Ok(0),
    }
}

/// `pg_try_advisory_lock*`: the fence when granted, `None` when taken.
async fn try_lock(state: &mut JobLocks, key: i64, mode: LockMode, fencing: Fencing) -> Result<Option<u64>, LockError> {
    loop {
        let session = state.pinned()?;
        let answer = session.lock_statement(session.stmts.try_lock(mode, fencing), &[&key]).await;
        if matches!(&answer, Err(e) if session.absorb_stale_cancel(e)) {
            // A stale cancel hit it, maybe after the grant (see
            // `super::session`): ask the server, else try again.
            if holds(state, key, mode).await? {
                return fence_after_the_fact(state, fencing).await.map(Some);
            }
            continue;
        }
        return match answer.and_then(|row| row.try_get::<_, Option<i64>>(0)) {
            Ok(fence) => Ok(fence.map(|f| f as u64)),
            Err(e) => Err(state.record_failure(&e)),
        };
    }
}

/// `pg_advisory_lock*` until `deadline`. On timeout the wait is
/// cancelled and awaited to its end, and the race settled so that the lock is
/// not held when `Timeout` is returned.
async fn wait_for_grant(
    state: &mut JobLocks,
    db: &Database,
    key: i64,
    mode: LockMode,
    fencing: Fencing,
    deadline: tokio::time::Instant,
) -> Result<u64, LockError> {
    loop {
        let waited = {
            let session = state.pinned()?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key];
            let waiting = session.lock_statement(session.stmts.lock(mode, fencing), &params);
            tokio::pin!(waiting);
            match tokio::time::timeout_at(deadline, &mut waiting).await {
                Ok(Err(e)) if session.absorb_stale_cancel(&e) => Waited::HitByStaleCancel,
                Ok(answer) => Waited::Answered(answer),
                Err(_elapsed) if session.cancel_running().await => {
                    match tokio::time::timeout(CANCEL_TAKES_EFFECT, waiting).await {
                        Ok(settled) => {
                            if let Err(e) = &settled {
                                // Our own cancel, seen (once: it may come
                                // again, see `super::session`).
                                session.absorb_stale_cancel(e);
                            }
                            Waited::Cancelled(settled)
                        }
                        // Delivered but without effect: only ending the backend stops it.
                        Err(_still_waiting) => Waited::CancelFailed,
                    }
                }
                Err(_elapsed) => Waited::CancelFailed,
            }
        };
        return match waited {
            Waited::Answered(answer) => match answer.and_then(|row| row.try_get::<_, i64>(0)) {
                Ok(fence) => Ok(fence as u64),
                // `lock_timeout` set on the role or database (55P03), or a
                // cancel from elsewhere: granted or not, the server knows.
                Err(e) if is_cancel(&e) => unlock_if_granted(state, db, key, mode).await,
                Err(e) => Err(state.record_failure(&e)),
            },
            Waited::HitByStaleCancel => {
                if holds(state, key, mode).await? {
                    fence_after_the_fact(state, fencing).await
                } else {
                    continue;
                }
            }
            // Granted before the cancel arrived: give it back.
            Waited::Cancelled(Ok(_)) => unlock_late_grant(state, db, key, mode).await,
            // Cancelled, but maybe after the grant: ask the server.
            Waited::Cancelled(Err(e)) if is_cancel(&e) => unlock_if_granted(state, db, key, mode).await,
            Waited::Cancelled(Err(e)) => Err(state.record_failure(&e)),
            Waited::CancelFailed => {
                // The wait goes on server-side: only ending the backend
                // stops it (which also drops the job's other locks).
                let cause = LockError::Unavailable(
                    "lock wait timed out and could not be cancelled; the session was terminated".into(),
                );
                Err(state.kill_because(db, cause).await)
            }
        };
    }
}

/// How a bounded wait ended.
enum Waited {
    /// The server answered within the timeout.
    Answered(Result<tokio_postgres::Row, tokio_postgres::Error>),
    /// A cancel sent for an earlier wait landed on this one.
    HitByStaleCancel,
    /// The timeout passed; a cancel was sent and this is how the wait ended.
    Cancelled(Result<tokio_postgres::Row, tokio_postgres::Error>),
    /// The timeout passed and no cancel could be sent.
    CancelFailed,
}

/// Whether this session holds `key` in `mode` on the server.
async fn holds(state: &mut JobLocks, key: i64, mode: LockMode) -> Result<bool, LockError> {
    let session = state.pinned()?;
    let answer = session.query_one(&session.stmts.holds, &[&key, &mode.pg_name()]).await;
    match answer.and_then(|row| row.try_get::<_, bool>(0)) {
        Ok(held) => Ok(held),
        Err(e) => {
            // Cannot tell whether it is held: the session must go.
            let err = state.record_failure(&e);
            Err(state.retire_because(err))
        }
    }
}

/// After a cancelled or timed-out wait: the lock may have been granted anyway.
async fn unlock_if_granted(state: &mut JobLocks, db: &Database, key: i64, mode: LockMode) -> Result<u64, LockError> {
    if holds(state, key, mode).await? { unlock_late_grant(state, db, key, mode).await } else { Err(LockError::Timeout) }
}

/// Unlocks a grant that arrived after its requester timed out, and reports
/// the timeout.
async fn unlock_late_grant(state: &mut JobLocks, db: &Database, key: i64, mode: LockMode) -> Result<u64, LockError> {
    db.note_late_grant();
    let session = state.pinned()?;
    match unlock(session, key, mode).await {
        Ok(_) => Err(LockError::Timeout),
        Err(e) => {
            // Cannot prove it is not held: close the session.
            match state.record_failure(&e) {
                LockError::Lost => Err(LockError::Lost),
                _ => Err(state.retire_because(LockError::Timeout)),
            }
        }
    }
}

/// `pg_advisory_unlock*` of one lock on `session`.
pub(crate) async fn unlock(session: &Session, key: i64, mode: LockMode) -> Result<bool, tokio_postgres::Error> {
    session.query_one(session.stmts.unlock(mode), &[&key]).await?.try_get(0)
}

/// [`unlock`] that nobody waits for yet (a release on a shared session): it
/// goes out with the session's next write, at the latest when the job's end
/// waits for it (see `JobSession::release_all`).
async fn unlock_queued(session: &Session, key: i64, mode: LockMode) -> Result<bool, tokio_postgres::Error> {
    session.queue_one(session.stmts.unlock(mode), &[&key]).await?.try_get(0)
}

fn is_cancel(err: &tokio_postgres::Error) -> bool {
    matches!(code_of(err), Some(sqlstate::QUERY_CANCELED | sqlstate::LOCK_NOT_AVAILABLE))
}
