//! Leader election for Berth, written once: `berth run --consul` and `berth run --elect` (one
//! acting daemon among several) and `control --consul` (one serving control instance) all
//! elect through it.
//!
//! - [`lease`] (pure): the deadline lease, "I lead until the moment my winning request was
//!   *sent* plus the TTL", on a monotonic clock. The lock service measures the same TTL from
//!   later (it received the request after it was sent), so the holder stops on its own clock
//!   no later than the service frees the lock.
//! - [`policy`] (pure): the one election setting, [`Policy::StepDown`] (any failed round ends
//!   leadership at once) or [`Policy::ServeToDeadline`] (a round that could not reach the lock
//!   service leaves the holder its deadline and no more), and [`Election`], the rules that turn
//!   a round's outcome into leading or standing by. Tested with explicit instants, no sleeps.
//! - [`lock`]: the [`SessionLock`] trait (take or keep a named lock with a session, release
//!   it) and [`LockError`], with the single rule for which errors mean "the session is dead".
//! - [`leadership`]: the shared handle ([`Leadership`]) the acting code asks whether it may act,
//!   and [`clock`], the injectable monotonic clock it asks it on.
//! - [`elector`]: the thin I/O shell, rounds every TTL/3 against a [`SessionLock`], with the
//!   fencing token of the current grant published for the writes it must fence ([`Fence`]).
//! - `consul` (feature `consul`): the lock as a Consul session lock (`berth-consul`).
//! - `control` (feature `control`): the lock as the volume control service's leader lock
//!   (`berth-volume-client`), whose fencing token is the lock's epoch.
//!
//! Imports point one way: `lease`, `lock` ← `policy` ← `leadership` ← `elector`; the two locks
//! import only `lock`.

pub mod clock;
#[cfg(feature = "consul")]
pub mod consul;
#[cfg(feature = "control")]
pub mod control;
pub mod elector;
pub mod leadership;
pub mod lease;
pub mod lock;
pub mod policy;

pub use clock::{Clock, ManualClock, SystemClock};
pub use elector::{Elector, Fence, NoTakeover, Takeover};
pub use leadership::{Leadership, View};
pub use lease::DeadlineLease;
pub use lock::{Acquired, LockError, SessionLock};
pub use policy::{Change, Election, Policy};
