//! What goes onto a box: the lagerd for its architecture and the image/
//! files (compiled into `lager`, so one file on the workstation is enough),
//! packed as one ustar stream for the box's own `tar`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::DeployError;

/// The box side of every step; streamed to `sh -s` and shipped in the bundle.
pub const BOX_SCRIPT: &str = include_str!("../../../../image/lager-box.sh");
const SUPERVISOR: &str = include_str!("../../../../image/lagerd-supervise");
const UNIT: &str = include_str!("../../../../image/systemd/lagerd.service");
const CONFIG: &str = include_str!("../../../../image/lagerd.conf");
const BLACKLIST: &str = include_str!("../../../../image/modprobe.d/blacklist-usbtmc.conf");
const UDEV_RULES: &str = include_str!("../../../../image/udev/99-lager-instruments.rules");

/// A machine lager builds lagerd for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
    Armv7,
}

impl Arch {
    /// From the box's `uname -m`. armv8l is a 32-bit userland on a 64-bit
    /// kernel, which runs armv7 code; armv6 (Pi Zero, Pi 1) cannot.
    pub fn from_uname(machine: &str) -> Option<Arch> {
        match machine.trim() {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            "armv7l" | "armv7" | "armv8l" => Some(Arch::Armv7),
            _ => None,
        }
    }

    /// The directory name under `target/dist/`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
        }
    }

    fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
            Arch::Armv7 => 40,
        }
    }
}

/// `e_machine` of an ELF file, `None` when it is not ELF (a wrapper
/// script, say: the box's own `--version` check judges those).
fn elf_machine(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    let raw = [bytes[18], bytes[19]];
    Some(match bytes[5] {
        2 => u16::from_be_bytes(raw),
        _ => u16::from_le_bytes(raw),
    })
}

fn machine_name(machine: u16) -> String {
    match machine {
        62 => "x86_64".into(),
        183 => "aarch64".into(),
        40 => "32-bit ARM".into(),
        3 => "x86 (32-bit)".into(),
        other => format!("ELF machine {other}"),
    }
}

/// Where lagerd for `arch` may be, in order: `--dist`, `LAGER_DIST`, then
/// beside this executable (a release directory, or target/<profile>/ next
/// to target/dist/ in a checkout).
pub fn candidates(arch: Arch, dist: Option<&Path>, exe: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(dist.map(Path::to_path_buf));
    dirs.extend(std::env::var_os("LAGER_DIST").map(PathBuf::from));
    let mut paths: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join(arch.name()).join("lagerd"))
        .collect();
    if let Some(dir) = exe.and_then(Path::parent) {
        paths.push(dir.join("dist").join(arch.name()).join("lagerd"));
        paths.push(dir.join(format!("lagerd-{}", arch.name())));
        if let Some(up) = dir.parent() {
            paths.push(up.join("dist").join(arch.name()).join("lagerd"));
        }
        // The sibling lagerd, when it was built for the box's machine.
        paths.push(dir.join("lagerd"));
    }
    paths
}

/// The lagerd to install, read whole and checked against the box's machine.
pub fn lagerd_for(
    arch: Arch,
    explicit: Option<&Path>,
    dist: Option<&Path>,
) -> Result<(PathBuf, Vec<u8>), DeployError> {
    let read = |path: &Path| {
        // A static lagerd is a few MiB; 256 MiB is no lagerd at all.
        crate::readcap::read_file(path, 256 << 20).map_err(|e| DeployError::ReadBinary {
            path: path.to_path_buf(),
            error: e.to_string(),
        })
    };
    let fits = |bytes: &[u8]| elf_machine(bytes).is_none_or(|m| m == arch.elf_machine());
    if let Some(path) = explicit {
        let bytes = read(path)?;
        if let Some(machine) = elf_machine(&bytes).filter(|m| *m != arch.elf_machine()) {
            return Err(DeployError::WrongArch {
                path: path.to_path_buf(),
                built_for: machine_name(machine),
                arch: arch.name(),
            });
        }
        return Ok((path.to_path_buf(), bytes));
    }
    let exe = std::env::current_exe().ok();
    let searched = candidates(arch, dist, exe.as_deref());
    for path in &searched {
        if !path.is_file() {
            continue;
        }
        let bytes = read(path)?;
        // Only ELF files count here: a stray script is no lagerd.
        if elf_machine(&bytes).is_some() && fits(&bytes) {
            return Ok((path.clone(), bytes));
        }
    }
    Err(DeployError::NoBinary {
        arch: arch.name(),
        searched,
    })
}

/// `lagerd.conf` as shipped, or with `--listen` addresses in place of the
/// default.
pub fn config(listen: &[String]) -> String {
    if listen.is_empty() {
        return CONFIG.to_string();
    }
    let opts: Vec<String> = listen.iter().map(|a| format!("--listen {a}")).collect();
    CONFIG.replace(
        "LAGERD_OPTS=\"\"",
        &format!("LAGERD_OPTS=\"{}\"", opts.join(" ")),
    )
}

/// The upload: lagerd, the box script, the supervisor and the image files.
pub fn bundle(lagerd: &[u8], config: &str) -> Vec<u8> {
    let mut tar = Tar::default();
    tar.add("lagerd", 0o755, lagerd);
    tar.add("lager-box.sh", 0o755, BOX_SCRIPT.as_bytes());
    tar.add("lagerd-supervise", 0o755, SUPERVISOR.as_bytes());
    tar.add("lagerd.service", 0o644, UNIT.as_bytes());
    tar.add("lagerd.conf", 0o644, config.as_bytes());
    tar.add("blacklist-usbtmc.conf", 0o644, BLACKLIST.as_bytes());
    tar.add("99-lager-instruments.rules", 0o644, UDEV_RULES.as_bytes());
    tar.finish()
}

const BLOCK: usize = 512;

/// A ustar (POSIX.1-1988) writer for regular files with short names: all
/// that busybox and GNU tar need to unpack the bundle.
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    pub fn add(&mut self, name: &str, mode: u32, data: &[u8]) {
        assert!(name.len() < 100, "tar member names are short here");
        let mtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut header = [0u8; BLOCK];
        let mut field = |at: usize, len: usize, value: &[u8]| {
            header[at..at + value.len().min(len)].copy_from_slice(&value[..value.len().min(len)]);
        };
        field(0, 100, name.as_bytes());
        field(100, 8, format!("{mode:07o}\0").as_bytes());
        field(108, 8, b"0000000\0");
        field(116, 8, b"0000000\0");
        field(124, 12, format!("{:011o}\0", data.len()).as_bytes());
        field(136, 12, format!("{mtime:011o}\0").as_bytes());
        field(148, 8, b"        ");
        field(156, 1, b"0");
        field(257, 8, b"ustar\x0000");
        field(265, 32, b"root");
        field(297, 32, b"root");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.bytes.resize(self.bytes.len() + pad, 0);
    }

    /// The archive, closed with its two zero blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len() + 2 * BLOCK, 0);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn the_system_tar_unpacks_the_bundle_byte_for_byte() {
        let dir = std::env::temp_dir().join(format!("lager-tar-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // 1023 bytes: a member whose data is not a whole block.
        let lagerd: Vec<u8> = (0..1023u32).map(|i| (i % 251) as u8).collect();
        let archive = bundle(&lagerd, &config(&["127.0.0.1:9100".into()]));
        assert_eq!(archive.len() % BLOCK, 0);
        let mut tar = Command::new("tar")
            .args(["-xf", "-", "-C"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &archive).unwrap();
        drop(tar.stdin.take());
        assert!(tar.wait().unwrap().success());
        assert_eq!(std::fs::read(dir.join("lagerd")).unwrap(), lagerd);
        assert_eq!(
            std::fs::read_to_string(dir.join("lager-box.sh")).unwrap(),
            BOX_SCRIPT
        );
        let conf = std::fs::read_to_string(dir.join("lagerd.conf")).unwrap();
        assert!(
            conf.contains("LAGERD_OPTS=\"--listen 127.0.0.1:9100\""),
            "{conf}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("lagerd"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn machines_map_to_the_builds_we_ship() {
        assert_eq!(Arch::from_uname("aarch64\n"), Some(Arch::Aarch64));
        assert_eq!(Arch::from_uname("armv7l"), Some(Arch::Armv7));
        assert_eq!(Arch::from_uname("armv8l"), Some(Arch::Armv7));
        assert_eq!(Arch::from_uname("x86_64"), Some(Arch::X86_64));
        assert_eq!(Arch::from_uname("armv6l"), None);
        assert_eq!(Arch::from_uname("mips"), None);
    }

    #[test]
    fn a_binary_for_another_machine_is_refused_by_name() {
        let me = std::env::current_exe().unwrap();
        let err = lagerd_for(Arch::Aarch64, Some(&me), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("is built for x86_64, but the box is aarch64"),
            "{text}"
        );
        let (_, bytes) = lagerd_for(Arch::X86_64, Some(&me), None).unwrap();
        assert_eq!(elf_machine(&bytes), Some(62));
    }
}
