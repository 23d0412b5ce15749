//! Where the one policy instance of a component lives between calls. Used by
//! the code that [`export_policy!`](crate::export_policy) expands to.

use std::any::Any;
use std::cell::RefCell;

use crate::{Policy, PolicyInfo};

/// The error `select` and `restore` give when `init` has not succeeded.
pub const NOT_INITIALISED: &str = "policy called before a successful init";

thread_local! {
    // A component instance is single-threaded; `thread_local` is a plain
    // static there, and keeps this safe Rust.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Run `P::init` and keep the instance it builds.
pub fn init<P: Policy>(config: &str) -> Result<PolicyInfo, String> {
    let (policy, info) = P::init(config)?;
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(policy)));
    Ok(info)
}

/// Call `f` on the instance, or return `uninitialised` if there is none.
pub fn with<P: Policy, R>(uninitialised: R, f: impl FnOnce(&mut P) -> R) -> R {
    INSTANCE.with(|slot| {
        match slot
            .borrow_mut()
            .as_mut()
            .and_then(|p| p.downcast_mut::<P>())
        {
            Some(policy) => f(policy),
            None => uninitialised,
        }
    })
}
