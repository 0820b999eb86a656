//! Lock holder identities (locking.md B.1, B.3): the CI-aware holder string
//! the CLI writes, the scope two processes of one job share, and the
//! human-readable form every message prints.
//!
//! Everything here is a pure function. The environment comes in as a lookup
//! closure so the CLI passes the real one and tests pass a map; nothing here
//! reads `std::env`, which matters because CI itself runs with `CI=true`.

/// An environment lookup: `Some(value)` when the variable is set.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The CI systems whose holders locking.md B.1 spells out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CiKind {
    Drone,
    GitHub,
    Bitbucket,
    GitLab,
    Jenkins,
    Generic,
}

/// The value of `name` when it is set and non-empty.
fn non_empty(env: EnvLookup<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// `name`, else `fallback` when unset or empty (the B.1 table's `(x)`).
fn or(env: EnvLookup<'_>, name: &str, fallback: &str) -> String {
    non_empty(env, name).unwrap_or_else(|| fallback.to_string())
}

/// CI detection, in the order of locking.md B.1; `None` means a dev host.
pub fn ci_kind(env: EnvLookup<'_>) -> Option<CiKind> {
    if non_empty(env, "LAGER_CI_OVERRIDE").is_some() {
        return None;
    }
    // Spec B.1: only the exact string `true` counts (`CI=1` is a dev host).
    if env("CI").as_deref() != Some("true") {
        return None;
    }
    let contains_ci = |name: &str, needle: &str| {
        env(name).is_some_and(|v| v.to_ascii_lowercase().contains(needle))
    };
    let kind = if env("DRONE").as_deref() == Some("true") {
        CiKind::Drone
    } else if non_empty(env, "GITHUB_RUN_ID").is_some() {
        CiKind::GitHub
    } else if non_empty(env, "BITBUCKET_BUILD_NUMBER").is_some() {
        CiKind::Bitbucket
    } else if contains_ci("CI_SERVER_NAME", "gitlab") {
        CiKind::GitLab
    } else if contains_ci("BUILD_TAG", "jenkins") {
        CiKind::Jenkins
    } else {
        CiKind::Generic
    };
    Some(kind)
}

/// The CI holder string of locking.md B.1 for `kind`.
pub fn ci_holder(kind: CiKind, env: EnvLookup<'_>, pid: u32, host: &str) -> String {
    match kind {
        CiKind::GitHub => format!(
            "ci:github:{}#{}-{}/{}@{}:{pid}",
            or(env, "GITHUB_REPOSITORY", "unknown"),
            or(env, "GITHUB_RUN_ID", "0"),
            or(env, "GITHUB_RUN_ATTEMPT", "1"),
            or(env, "GITHUB_JOB", "job"),
            or(env, "RUNNER_NAME", host),
        ),
        CiKind::Drone => format!(
            "ci:drone:{}#{}:{pid}@{host}",
            or(env, "DRONE_REPO", "unknown"),
            or(env, "DRONE_BUILD_NUMBER", "0"),
        ),
        CiKind::GitLab => {
            let project = non_empty(env, "CI_PROJECT_PATH")
                .unwrap_or_else(|| or(env, "CI_PROJECT_NAME", "unknown"));
            format!(
                "ci:gitlab:{project}#{}/{}:{pid}@{host}",
                or(env, "CI_PIPELINE_ID", "0"),
                or(env, "CI_JOB_NAME", "job"),
            )
        }
        CiKind::Bitbucket => {
            let repo = non_empty(env, "BITBUCKET_REPO_FULL_NAME")
                .unwrap_or_else(|| or(env, "BITBUCKET_REPO_SLUG", "unknown"));
            format!(
                "ci:bitbucket:{repo}#{}:{pid}@{host}",
                or(env, "BITBUCKET_BUILD_NUMBER", "0"),
            )
        }
        CiKind::Jenkins => {
            let tag = non_empty(env, "BUILD_TAG").unwrap_or_else(|| or(env, "BUILD_NUMBER", "0"));
            format!("ci:jenkins:{tag}:{pid}@{host}")
        }
        CiKind::Generic => format!("ci:generic:{host}:{pid}"),
    }
}

/// `lock_holder()` of locking.md B.1 given the plain user: the
/// `LAGER_LOCK_HOLDER` override, else the CI holder, else `user`.
pub fn lock_holder(env: EnvLookup<'_>, pid: u32, host: &str, user: &str) -> String {
    if let Some(holder) = non_empty(env, "LAGER_LOCK_HOLDER") {
        return holder;
    }
    match ci_kind(env) {
        Some(kind) => ci_holder(kind, env, pid, host),
        None => user.to_string(),
    }
}

/// `lock_scope(s)`: `s` with every `:<digits>` that sits immediately before
/// an `@` or the end removed (the regex `:\d+(?=@|$)`), so that the pid
/// suffix of a CI holder does not distinguish processes of one job.
///
/// Digits are ASCII only; holders are built from pids and CI build numbers.
pub fn lock_scope(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied_to = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b':' {
            let digits_end = i
                + 1
                + bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
            let has_digits = digits_end > i + 1;
            let at_boundary = digits_end == bytes.len() || bytes[digits_end] == b'@';
            if has_digits && at_boundary {
                // Both ends are ASCII, so both are char boundaries.
                out.push_str(&s[copied_to..i]);
                copied_to = digits_end;
                i = digits_end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[copied_to..]);
    out
}

/// `held_by_self(locked_by)` of locking.md B.1 (the passive check only):
/// the same scope as our holder, or exactly the plain user.
pub fn held_by_self(locked_by: &str, holder: &str, user: &str) -> bool {
    lock_scope(locked_by) == lock_scope(holder) || locked_by == user
}

/// The human-readable form of a holder (locking.md B.3). Returns the input
/// unchanged whenever it does not have the expected shape; never panics.
pub fn format_lock_user(s: &str) -> String {
    if let Some(rest) = s.strip_prefix("ci:") {
        return format_ci(rest).unwrap_or_else(|| s.to_string());
    }
    // A dashboard origin token `kind:id:user@host`; the user may hold colons.
    let mut parts = s.splitn(3, ':');
    if let (Some(_), Some(_), Some(user)) = (parts.next(), parts.next(), parts.next()) {
        if user.contains('@') {
            return user.to_string();
        }
    }
    s.to_string()
}

/// The part of `s` before the first `c`, and after it ("" when absent),
/// like Python's `str.partition`.
fn partition(s: &str, c: char) -> (&str, &str) {
    s.split_once(c).unwrap_or((s, ""))
}

/// `<name> <repo> build <build>` or `<name> <repo>` from `<repo>#<build>:...`.
fn format_repo_build(name: &str, rest: &str) -> Option<String> {
    let (head, _) = partition(rest, ':');
    let (repo, build) = partition(head, '#');
    if repo.is_empty() {
        return None;
    }
    Some(if build.is_empty() {
        format!("{name} {repo}")
    } else {
        format!("{name} {repo} build {build}")
    })
}

/// Formats `ci:<rest>`; `None` means "print the raw holder".
fn format_ci(rest: &str) -> Option<String> {
    let (system, rest) = rest.split_once(':')?;
    match system {
        "github" => {
            // `<repo>#<run>-<attempt>/<job>@<runner>` once the `:<pid>` is cut.
            let (front, _pid) = rest.rsplit_once(':')?;
            let (repo, after) = partition(front, '#');
            let (run_attempt, job_runner) = partition(after, '/');
            let (run, _attempt) = partition(run_attempt, '-');
            let (job, runner) = partition(job_runner, '@');
            if repo.is_empty() || run.is_empty() {
                return None;
            }
            let mut out = format!("github {repo} run {run}");
            if !job.is_empty() {
                out.push_str(&format!(" job {job}"));
            }
            if !runner.is_empty() {
                out.push_str(&format!(" on {runner}"));
            }
            Some(out)
        }
        "drone" => format_repo_build("drone", rest),
        "bitbucket" => format_repo_build("bitbucket", rest),
        "gitlab" => {
            let front = rest.rsplit_once('@').map_or(rest, |(front, _host)| front);
            let front = front.rsplit_once(':').map_or(front, |(front, _pid)| front);
            let (project, after) = partition(front, '#');
            let (pipeline, job) = partition(after, '/');
            let mut out = String::from("gitlab");
            for (label, piece) in [("", project), (" pipeline", pipeline), (" job", job)] {
                if !piece.is_empty() {
                    out.push_str(&format!("{label} {piece}"));
                }
            }
            Some(out)
        }
        "jenkins" => {
            let (tag, _) = partition(rest, ':');
            Some(if tag.is_empty() {
                "jenkins".to_string()
            } else {
                format!("jenkins {tag}")
            })
        }
        "generic" => {
            let (host, _) = partition(rest, ':');
            Some(if host.is_empty() {
                "ci".to_string()
            } else {
                format!("ci on {host}")
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn lock_scope_spec_examples() {
        assert_eq!(lock_scope("ci:jenkins:42:7@host"), "ci:jenkins:42@host");
        assert_eq!(lock_scope("alice"), "alice");
        assert_eq!(
            lock_scope("web:17:alice@example.com"),
            "web:17:alice@example.com"
        );
        assert_eq!(lock_scope("tcp:host:5000"), "tcp:host");
    }

    #[test]
    fn lock_scope_edges() {
        assert_eq!(lock_scope(""), "");
        assert_eq!(lock_scope(":"), ":");
        assert_eq!(lock_scope(":5"), "");
        assert_eq!(lock_scope("::5"), ":");
        assert_eq!(lock_scope("a:1:2"), "a:1");
        assert_eq!(lock_scope("a:1:2@h:3"), "a:1@h");
        assert_eq!(lock_scope("a:@b"), "a:@b");
        assert_eq!(lock_scope("a:12x@b"), "a:12x@b");
        assert_eq!(lock_scope("ci:generic:box-1:99"), "ci:generic:box-1");
        assert_eq!(
            lock_scope("ci:github:o/r#9-1/job@runner:42"),
            "ci:github:o/r#9-1/job@runner"
        );
        assert_eq!(
            lock_scope("ci:drone:o/r#15:5@runner-7"),
            "ci:drone:o/r#15@runner-7"
        );
        assert_eq!(lock_scope("é:1@ü:2"), "é@ü");
        // Non-ASCII digits are not digits here.
        assert_eq!(lock_scope("a:٣"), "a:٣");
    }

    #[test]
    fn two_processes_of_one_job_share_a_scope_and_two_jobs_do_not() {
        let a = "ci:gitlab:g/p#991/test:5@h";
        let b = "ci:gitlab:g/p#991/test:6@h";
        let c = "ci:gitlab:g/p#992/test:5@h";
        assert_eq!(lock_scope(a), lock_scope(b));
        assert_ne!(lock_scope(a), lock_scope(c));
    }

    #[test]
    fn format_lock_user_spec_fixed_points() {
        let cases = [
            ("", ""),
            (
                "ci:github:lager/lager#999-2/integration@bench-3:42",
                "github lager/lager run 999 job integration on bench-3",
            ),
            (
                "ci:github:lager#9182-1/test@runner-3:7",
                "github lager run 9182 job test on runner-3",
            ),
            ("ci:github:weird", "ci:github:weird"),
            ("ci:github:#123/job@r:9", "ci:github:#123/job@r:9"),
            ("ci:github:repo#", "ci:github:repo#"),
            ("ci:drone:org/proj#15:5@runner-7", "drone org/proj build 15"),
            ("ci:drone:org/proj:5@runner-7", "drone org/proj"),
            (
                "ci:gitlab:grp/proj#991/test:5@h",
                "gitlab grp/proj pipeline 991 job test",
            ),
            (
                "ci:bitbucket:team/repo#12:5@h",
                "bitbucket team/repo build 12",
            ),
            ("ci:bitbucket:team/repo:5@h", "bitbucket team/repo"),
            ("ci:jenkins:jenkins-job-42:7@host", "jenkins jenkins-job-42"),
            ("ci:jenkins:", "jenkins"),
            ("ci:generic:box-99:11", "ci on box-99"),
            ("ci:generic:", "ci"),
            ("ci:other:thing:1", "ci:other:thing:1"),
            ("ci:x", "ci:x"),
            ("dashboard:abc:user@example.com", "user@example.com"),
            (
                "dashboard:uuid:user:with:colons@example.com",
                "user:with:colons@example.com",
            ),
            ("alice", "alice"),
            ("dashboard:", "dashboard:"),
            ("dashboard:malformed", "dashboard:malformed"),
            ("tcp:host:5000", "tcp:host:5000"),
        ];
        for (input, want) in cases {
            assert_eq!(format_lock_user(input), want, "input {input:?}");
        }
    }

    #[test]
    fn format_lock_user_github_optional_pieces() {
        assert_eq!(
            format_lock_user("ci:github:o/r#5-1/@:1"),
            "github o/r run 5"
        );
        assert_eq!(format_lock_user("ci:github:o/r#5:1"), "github o/r run 5");
        assert_eq!(
            format_lock_user("ci:github:o/r#5-1/j:1"),
            "github o/r run 5 job j"
        );
        assert_eq!(
            format_lock_user("ci:github:o/r#5-1/@run:1"),
            "github o/r run 5 on run"
        );
    }

    #[test]
    fn format_lock_user_gitlab_drops_empty_pieces() {
        assert_eq!(
            format_lock_user("ci:gitlab:grp/proj:5@h"),
            "gitlab grp/proj"
        );
        assert_eq!(
            format_lock_user("ci:gitlab:grp/proj#7:5@h"),
            "gitlab grp/proj pipeline 7"
        );
        assert_eq!(
            format_lock_user("ci:gitlab:g#7/job:x:5@h"),
            "gitlab g pipeline 7 job job:x"
        );
    }

    #[test]
    fn format_lock_user_round_trips_every_ci_holder() {
        let env = env_of(&[
            ("GITHUB_REPOSITORY", "lager/lager"),
            ("GITHUB_RUN_ID", "999"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "integration"),
            ("RUNNER_NAME", "bench-3"),
            ("DRONE_REPO", "org/proj"),
            ("DRONE_BUILD_NUMBER", "15"),
            ("CI_PROJECT_PATH", "grp/proj"),
            ("CI_PIPELINE_ID", "991"),
            ("CI_JOB_NAME", "test"),
            ("BITBUCKET_REPO_FULL_NAME", "team/repo"),
            ("BITBUCKET_BUILD_NUMBER", "12"),
            ("BUILD_TAG", "jenkins-job-42"),
        ]);
        let cases = [
            (
                CiKind::GitHub,
                "github lager/lager run 999 job integration on bench-3",
            ),
            (CiKind::Drone, "drone org/proj build 15"),
            (CiKind::GitLab, "gitlab grp/proj pipeline 991 job test"),
            (CiKind::Bitbucket, "bitbucket team/repo build 12"),
            (CiKind::Jenkins, "jenkins jenkins-job-42"),
            (CiKind::Generic, "ci on h"),
        ];
        for (kind, want) in cases {
            assert_eq!(
                format_lock_user(&ci_holder(kind, &env, 42, "h")),
                want,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn holder_texts_never_panic_or_vanish() {
        let pieces = [
            "",
            "ci",
            ":",
            "#",
            "/",
            "@",
            "-",
            "ci:",
            "github",
            "gitlab",
            "drone",
            "bitbucket",
            "jenkins",
            "generic",
            "é",
            "\u{0}",
            "1",
            "::",
            "##",
            "@@",
            "ü:",
            "🦀",
        ];
        // Every string of up to three pieces and a separator, bare and as a
        // CI holder: no panic, and what a user would see is sane.
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for d in ["", ":", "#", "@", "/", "-"] {
                        let s = format!("{a}{b}{d}{c}");
                        for holder in [s.clone(), format!("ci:{s}"), format!("ci:{a}:{b}{d}{c}")] {
                            let shown = format_lock_user(&holder);
                            assert!(
                                shown.is_empty() == holder.is_empty(),
                                "{holder:?} is shown as {shown:?}"
                            );
                            // Only the two shapes B.3 rewrites are rewritten.
                            if !holder.starts_with("ci:") && !holder.contains('@') {
                                assert_eq!(shown, holder);
                            }
                        }
                        // A scope is never longer, and without a `:<digit>`
                        // a string is its own scope.
                        let scope = lock_scope(&s);
                        assert!(scope.len() <= s.len(), "{s:?} -> {scope:?}");
                        if !s
                            .as_bytes()
                            .windows(2)
                            .any(|w| w[0] == b':' && w[1].is_ascii_digit())
                        {
                            assert_eq!(scope, s);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ci_detection_order() {
        assert_eq!(ci_kind(&env_of(&[])), None);
        assert_eq!(ci_kind(&env_of(&[("CI", "1")])), None);
        assert_eq!(ci_kind(&env_of(&[("CI", "TRUE")])), None);
        assert_eq!(ci_kind(&env_of(&[("CI", "true")])), Some(CiKind::Generic));
        assert_eq!(
            ci_kind(&env_of(&[
                ("CI", "true"),
                ("LAGER_CI_OVERRIDE", "1"),
                ("GITHUB_RUN_ID", "5")
            ])),
            None
        );
        // An empty override does not force dev mode.
        assert_eq!(
            ci_kind(&env_of(&[("CI", "true"), ("LAGER_CI_OVERRIDE", "")])),
            Some(CiKind::Generic)
        );
        // Drone wins over GitHub, GitHub over Bitbucket, and so on.
        let all = [
            ("CI", "true"),
            ("DRONE", "true"),
            ("GITHUB_RUN_ID", "5"),
            ("BITBUCKET_BUILD_NUMBER", "3"),
            ("CI_SERVER_NAME", "GitLab"),
            ("BUILD_TAG", "Jenkins-x"),
        ];
        let want = [
            CiKind::Drone,
            CiKind::GitHub,
            CiKind::Bitbucket,
            CiKind::GitLab,
            CiKind::Jenkins,
            CiKind::Generic,
        ];
        for (skip, kind) in want.iter().enumerate() {
            let mut pairs = vec![all[0]];
            pairs.extend_from_slice(&all[1 + skip..]);
            assert_eq!(ci_kind(&env_of(&pairs)), Some(*kind), "{pairs:?}");
        }
        assert_eq!(
            ci_kind(&env_of(&[("CI", "true"), ("DRONE", "1")])),
            Some(CiKind::Generic)
        );
        assert_eq!(
            ci_kind(&env_of(&[("CI", "true"), ("GITHUB_RUN_ID", "")])),
            Some(CiKind::Generic)
        );
    }

    #[test]
    fn ci_holders_with_values() {
        let github = env_of(&[
            ("GITHUB_REPOSITORY", "lager/lager"),
            ("GITHUB_RUN_ID", "999"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "integration"),
            ("RUNNER_NAME", "bench-3"),
        ]);
        assert_eq!(
            ci_holder(CiKind::GitHub, &github, 42, "h"),
            "ci:github:lager/lager#999-2/integration@bench-3:42"
        );
        let gitlab = env_of(&[("CI_PROJECT_NAME", "proj"), ("CI_PIPELINE_ID", "7")]);
        assert_eq!(
            ci_holder(CiKind::GitLab, &gitlab, 5, "h"),
            "ci:gitlab:proj#7/job:5@h"
        );
        let bitbucket = env_of(&[
            ("BITBUCKET_REPO_SLUG", "slug"),
            ("BITBUCKET_BUILD_NUMBER", "4"),
        ]);
        assert_eq!(
            ci_holder(CiKind::Bitbucket, &bitbucket, 5, "h"),
            "ci:bitbucket:slug#4:5@h"
        );
        let jenkins = env_of(&[("BUILD_NUMBER", "77")]);
        assert_eq!(
            ci_holder(CiKind::Jenkins, &jenkins, 5, "h"),
            "ci:jenkins:77:5@h"
        );
    }

    #[test]
    fn ci_holders_fall_back_when_unset_or_empty() {
        let empty = env_of(&[("GITHUB_REPOSITORY", ""), ("RUNNER_NAME", "")]);
        assert_eq!(
            ci_holder(CiKind::GitHub, &empty, 1, "host"),
            "ci:github:unknown#0-1/job@host:1"
        );
        assert_eq!(
            ci_holder(CiKind::Drone, &empty, 1, "host"),
            "ci:drone:unknown#0:1@host"
        );
        assert_eq!(
            ci_holder(CiKind::GitLab, &empty, 1, "host"),
            "ci:gitlab:unknown#0/job:1@host"
        );
        assert_eq!(
            ci_holder(CiKind::Bitbucket, &empty, 1, "host"),
            "ci:bitbucket:unknown#0:1@host"
        );
        assert_eq!(
            ci_holder(CiKind::Jenkins, &empty, 1, "host"),
            "ci:jenkins:0:1@host"
        );
        assert_eq!(
            ci_holder(CiKind::Generic, &empty, 1, "host"),
            "ci:generic:host:1"
        );
    }

    #[test]
    fn lock_holder_precedence() {
        let dev = env_of(&[]);
        assert_eq!(lock_holder(&dev, 1, "h", "alice"), "alice");
        let ci = env_of(&[("CI", "true")]);
        assert_eq!(lock_holder(&ci, 1, "h", "alice"), "ci:generic:h:1");
        let overridden = env_of(&[("CI", "true"), ("LAGER_LOCK_HOLDER", "shared job")]);
        assert_eq!(lock_holder(&overridden, 1, "h", "alice"), "shared job");
        let empty_override = env_of(&[("LAGER_LOCK_HOLDER", "")]);
        assert_eq!(lock_holder(&empty_override, 1, "h", "alice"), "alice");
        let forced_dev = env_of(&[("CI", "true"), ("LAGER_CI_OVERRIDE", "yes")]);
        assert_eq!(lock_holder(&forced_dev, 1, "h", "alice"), "alice");
    }

    #[test]
    fn held_by_self_uses_scope_or_plain_user() {
        assert!(held_by_self("ci:generic:h:2", "ci:generic:h:1", "alice"));
        assert!(held_by_self("alice", "ci:generic:h:1", "alice"));
        assert!(!held_by_self("bob", "ci:generic:h:1", "alice"));
        assert!(!held_by_self(
            "ci:generic:other:1",
            "ci:generic:h:1",
            "alice"
        ));
    }
}
