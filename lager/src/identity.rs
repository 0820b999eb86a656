//! Who the CLI acts as (locking.md B.1): the plain user and the auto-lock
//! holder, computed from the real environment, hostname and passwd entry
//! and handed to the pure functions in `common::holder`.

use std::ffi::CStr;

use common::holder;

/// The real process environment as a lookup (non-UTF-8 values count as unset).
pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn non_empty_env(name: &str) -> Option<String> {
    env_lookup(name).filter(|v| !v.is_empty())
}

/// `lager_user()`: `LAGER_USER`, else the global `DEFAULTS.user`, else the
/// OS login name (`LOGNAME`, `USER`, `LNAME`, `USERNAME`, passwd entry).
pub fn lager_user(global_default_user: Option<&str>) -> String {
    if let Some(user) = non_empty_env("LAGER_USER") {
        return user;
    }
    if let Some(user) = global_default_user.filter(|u| !u.is_empty()) {
        return user.to_string();
    }
    ["LOGNAME", "USER", "LNAME", "USERNAME"]
        .iter()
        .find_map(|name| non_empty_env(name))
        .or_else(passwd_name)
        .unwrap_or_else(|| "unknown".to_string())
}

/// The passwd entry's name for our uid, if there is one.
fn passwd_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid value of this plain C struct (null pointers, zero ids); getpwuid_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, both sized as passed.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    name.to_str()
        .ok()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// This machine's hostname (`unknown` if it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if name.is_empty() {
        "unknown".to_string()
    } else {
        name
    }
}

/// Whether the environment says we run under CI (locking.md B.1).
pub fn under_ci() -> bool {
    holder::ci_kind(&env_lookup).is_some()
}

/// `lock_holder()`: `LAGER_LOCK_HOLDER`, else the CI holder, else `user`.
pub fn lock_holder(user: &str) -> String {
    holder::lock_holder(&env_lookup, std::process::id(), &hostname(), user)
}

/// The two identities a lock decision needs.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub holder: String,
}

impl Identity {
    pub fn current(global_default_user: Option<&str>) -> Identity {
        let user = lager_user(global_default_user);
        let holder = lock_holder(&user);
        Identity { user, holder }
    }

    /// `held_by_self(locked_by)` of locking.md B.1.
    pub fn holds(&self, locked_by: &str) -> bool {
        holder::held_by_self(locked_by, &self.holder, &self.user)
    }
}
