//! The transport on real loopback sockets, in-process, behind a small test
//! service, so limits (budgets, spool dir) can be set that `lagerd` has no
//! flag for. The daemon-level cases are in `lagerd/tests/it/http_framing.rs`.

use super::*;

use std::io::{BufRead, BufReader};
use std::sync::atomic::AtomicU32;

/// Answers `<method> <path> <body length> <body kind>`; `/stash` keeps a
/// clone of its `Client`; `/fd` answers the connection's descriptor.
struct Echo {
    stashed: Mutex<Vec<Client>>,
}

impl Service for Echo {
    fn body_limit(&self, _method: &str, path: &str) -> usize {
        if path == "/upload" {
            64 << 20
        } else {
            64 * 1024
        }
    }

    fn handle(&self, request: Request, client: &Client) -> Response {
        if request.path == "/stash" {
            self.stashed.lock().unwrap().push(client.clone());
        }
        let text = if request.path == "/fd" || request.path == "/stash" {
            match client.state().socket {
                Socket::Open(fd) => fd.to_string(),
                _ => "none".into(),
            }
        } else {
            let sum: u64 = request.body.iter().map(|b| u64::from(*b)).sum();
            format!(
                "{} {} {} {sum} {:?}",
                request.method,
                request.path,
                request.body.len(),
                request.body
            )
        };
        Response {
            status: 200,
            headers: Vec::new(),
            body: Body::Full(text.into_bytes()),
        }
    }

    fn refusal(&self, status: u16, message: &str, _path: Option<&str>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Full(message.as_bytes().to_vec()),
        }
    }
}

struct Running {
    server: Option<Server>,
    addr: SocketAddr,
    service: Arc<Echo>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(Duration::from_millis(100));
        }
    }
}

impl Running {
    fn budget(&self) -> (usize, usize) {
        self.server.as_ref().unwrap().shared.budget.in_use()
    }
}

fn serve(limits: Limits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Arc::new(Echo {
        stashed: Mutex::new(Vec::new()),
    });
    let server = Server::start(vec![listener], service.clone(), limits).unwrap();
    Running {
        server: Some(server),
        addr,
        service,
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "lagerd-server-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads one response: (status, body). Content-Length framed (all we send).
fn reply(reader: &mut impl BufRead) -> (u16, String) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header == "\r\n" {
            break;
        }
        if let Some(value) = header.strip_prefix("Content-Length: ") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    reply(&mut BufReader::new(stream))
}

#[test]
fn decodes_query_parameters() {
    assert_eq!(percent_decode("%2Ftmp%2Fa+b"), "/tmp/a b");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
    assert_eq!(percent_decode("%41"), "A");
    let request = Request {
        method: "GET".into(),
        path: "/download-file".into(),
        query: "filename=%2Ftmp%2Flager-output%2Fa+b.txt&x".into(),
        headers: Vec::new(),
        body: RequestBody::default(),
        peer: "127.0.0.1:1".parse().unwrap(),
        http11: true,
    };
    assert_eq!(
        request.query_param("filename").as_deref(),
        Some("/tmp/lager-output/a b.txt")
    );
    assert_eq!(request.query_param("x").as_deref(), Some(""));
}

/// Issue 12, defect 3: a large upload goes to an unnamed file in the spool
/// dir and reaches the handler as a slice; the budget is given back.
#[test]
fn issue12_uploads_are_spooled_to_disk_and_seen_as_bytes() {
    let spool = Dir::new("spool");
    let s = serve(Limits {
        spool_dir: Some(spool.0.clone()),
        ..Limits::default()
    });
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
    let mut stream = connect(s.addr);
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // In pieces, as a network delivers it.
    for piece in body.chunks(100_000) {
        stream.write_all(piece).unwrap();
    }
    let mut reader = BufReader::new(stream);
    let (status, text) = reply(&mut reader);
    assert_eq!(status, 200);
    assert_eq!(
        text,
        format!(
            "POST /upload {} {sum} RequestBody({} bytes, spooled)",
            body.len(),
            body.len()
        )
    );
    // Chunked uploads too; small bodies stay in memory.
    let stream = reader.get_mut();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for piece in body.chunks(70_000) {
        write!(stream, "{:x}\r\n", piece.len()).unwrap();
        stream.write_all(piece).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream
        .write_all(b"0\r\n\r\nPOST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    let (_, text) = reply(&mut reader);
    assert!(text.ends_with("bytes, spooled)"), "{text}");
    assert_eq!(
        reply(&mut reader).1,
        "POST /small 2 209 RequestBody(2 bytes, memory)"
    );
    assert_eq!(
        std::fs::read_dir(&spool.0).unwrap().count(),
        0,
        "nothing left in the spool dir"
    );
    assert!(
        lager_wait(|| s.budget() == (0, 0)),
        "budget given back: {:?}",
        s.budget()
    );
}

/// Issue 12, defect 3: bodies in flight share one budget; beyond it a
/// request is refused with 503 and what to do, and everyone else is served.
#[test]
fn issue12_bodies_beyond_the_budget_get_a_clear_503() {
    let s = serve(Limits {
        body_memory_budget: 100 * 1024,
        ..Limits::default()
    });
    // Two clients announce 40 KiB each and send only part of it.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(s.addr);
        stream
            .write_all(b"POST /lock HTTP/1.1\r\nHost: t\r\nContent-Length: 40960\r\n\r\n{")
            .unwrap();
        held.push(stream);
    }
    assert!(lager_wait(|| s.budget().0 == 80 * 1024), "{:?}", s.budget());
    let (status, text) = exchange(
        s.addr,
        b"POST /lock HTTP/1.1\r\nHost: t\r\nContent-Length: 40960\r\n\r\n",
    );
    assert_eq!(status, 503);
    assert!(
        text.contains("too many request bodies at once") && text.contains("retry in a few seconds"),
        "{text}"
    );
    // A small body still fits, and a body-less request needs none.
    let small = b"POST /lock HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(exchange(s.addr, small).0, 200);
    assert_eq!(
        exchange(s.addr, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").0,
        200
    );
    drop(held);
    assert!(lager_wait(|| s.budget() == (0, 0)), "{:?}", s.budget());
    let announced = b"POST /lock HTTP/1.1\r\nHost: t\r\nContent-Length: 40960\r\n\r\n";
    let mut stream = connect(s.addr);
    stream.write_all(announced).unwrap();
    stream.write_all(&[b' '; 40960]).unwrap();
    assert_eq!(reply(&mut BufReader::new(stream)).0, 200);
}

/// Issue 12, defect 11: a `Client` kept past its connection answers "gone"
/// and never looks at the descriptor, which a new connection may now own.
#[test]
fn issue12_a_kept_client_does_not_outlive_its_connection() {
    let s = serve(Limits::default());
    let (status, fd) = exchange(
        s.addr,
        b"GET /stash HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let stashed = s.service.stashed.lock().unwrap()[0].clone();
    assert!(lager_wait(|| matches!(
        stashed.state().socket,
        Socket::Closed
    )));
    // New, live connections; the kernel hands out the lowest free numbers,
    // so one of them very likely reuses the stashed connection's.
    let reused_by: Vec<(TcpStream, String)> = (0..20)
        .map(|_| {
            let mut stream = connect(s.addr);
            stream
                .write_all(b"GET /fd HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let fd = reply(&mut BufReader::new(stream.try_clone().unwrap())).1;
            (stream, fd)
        })
        .collect();
    let reused = reused_by.iter().any(|(_, other)| *other == fd);
    assert!(
        stashed.gone(),
        "a closed connection's client is gone (descriptor reused: {reused})"
    );
    // The live connection that may own the number now is not gone.
    let (stream, other) = &reused_by[0];
    let live = s.service.stashed.lock().unwrap().len();
    assert_eq!(live, 1);
    assert!(!other.is_empty() && stream.peer_addr().is_ok());
}

/// Issue 12, defect 2: pipelined bytes after a complete request are timed
/// like any head (408), not parked for the idle timeout.
#[test]
fn issue12_pipelined_leftovers_get_408_at_the_head_deadline() {
    let s = serve(Limits {
        head_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let mut stream = connect(s.addr);
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHo")
        .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(reply(&mut reader).0, 200);
    let started = Instant::now();
    let (status, text) = reply(&mut reader);
    assert_eq!(
        (status, text.as_str()),
        (408, "Request headers not received in time")
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Issue 12, defect 2: a body has a total deadline, however it trickles.
#[test]
fn issue12_a_trickling_body_gets_408_at_its_deadline() {
    let s = serve(Limits {
        body_timeout: Duration::from_millis(500),
        ..Limits::default()
    });
    let mut stream = connect(s.addr);
    stream
        .write_all(b"POST /lock HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
        .unwrap();
    let started = Instant::now();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let dripper = thread::spawn(move || {
        // A trailer line every 100 ms, far longer than the deadline.
        for _ in 0..50 {
            if stream.write_all(b"X: 1\r\n").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let (status, text) = reply(&mut reader);
    assert_eq!(
        (status, text.as_str()),
        (408, "Request body not received in time")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let _ = dripper.join();
}

fn lager_wait(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    cond()
}
