//! fork() safety for the libraries the token runs inside its own process.
//!
//! The token rebuilds its own state in a forked child (`C_Initialize` after
//! fork), so its own locks never matter there. SQLite's process-wide mutexes
//! (page cache, memory, VFS) do: a fork while another thread is inside
//! SQLite leaves one of them locked forever in the child, and so do the
//! locks of Zymbit's library during a device call. So every use of SQLite
//! and of the device holds a shared "gate", and fork() takes it exclusively
//! before it forks (the ABI crate registers [`prepare`], [`parent`] and
//! [`child`] with `pthread_atfork`): a fork waits for calls in progress to
//! finish, and no new one starts until it is done.

use std::cell::{Cell, RefCell};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::lock::{read, write};

static GATE: RwLock<()> = RwLock::new(());

thread_local! {
    /// How deep this thread is in gated code (the gate is taken once).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The exclusive hold of the forking thread, between prepare and parent/child.
    static FORKING: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// A shared hold on the gate, for the duration of a SQLite call.
pub struct Entered {
    _guard: Option<RwLockReadGuard<'static, ()>>,
}

/// Enters gated code; nested entries on one thread take the gate once.
pub fn enter() -> Entered {
    let depth = DEPTH.get();
    DEPTH.set(depth + 1);
    let guard = (depth == 0).then(|| read(&GATE));
    Entered { _guard: guard }
}

impl Drop for Entered {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get().saturating_sub(1));
    }
}

/// Before fork(): waits until no thread is in gated code, then holds the gate.
pub fn prepare() {
    // The forking thread itself is never inside gated code here: nothing
    // in the token forks.
    let guard = write(&GATE);
    FORKING.with(|f| *f.borrow_mut() = Some(guard));
}

/// After fork(), in the parent: releases the gate.
pub fn parent() {
    FORKING.with(|f| f.borrow_mut().take());
}

/// After fork(), in the child: releases the gate (the child has one thread,
/// the one that forked).
pub fn child() {
    FORKING.with(|f| f.borrow_mut().take());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_entries_and_a_fork_cycle() {
        {
            let _a = enter();
            let _b = enter();
            assert_eq!(DEPTH.get(), 2);
        }
        assert_eq!(DEPTH.get(), 0);
        prepare();
        parent();
        let _c = enter();
        drop(_c);
        prepare();
        child();
        let _d = enter();
    }

    #[test]
    fn prepare_waits_for_calls_in_progress() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let inside = enter();
        let forked = Arc::new(AtomicBool::new(false));
        let t = {
            let forked = forked.clone();
            std::thread::spawn(move || {
                prepare();
                forked.store(true, Ordering::SeqCst);
                parent();
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!forked.load(Ordering::SeqCst), "fork waited for the call");
        drop(inside);
        t.join().unwrap();
        assert!(forked.load(Ordering::SeqCst));
    }
}
