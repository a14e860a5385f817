//! The VLM client over HTTPS (the `tls` feature): a private CA and a server certificate made by
//! the `openssl` command, a TLS terminator in Python's `ssl` module in front of the oracle
//! server, all on loopback. The client answers through it when it trusts the CA (`ca_file`),
//! and refuses the server when it does not.
#![cfg(feature = "tls")]

use reflex_reward::oracle::{Oracle, OracleConfig};
use reflex_reward::parse::Preference;
use reflex_reward::vlm::{Answer, Png, Query, Request, VlmClient, VlmConfig};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kills the terminator when the test ends, however it ends.
struct Terminator(Child);

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed (`cert.pem`,
/// `key.pem`).
fn private_ca(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "1",
        "-subj",
        "/CN=reflex test CA",
        "-keyout",
        "ca.key",
    ]);
    ca.extend([
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign"]);
    openssl(&ca, dir);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "cert.pem",
            "-extfile",
            "server.ext",
        ],
        dir,
    );
}

fn terminator(dir: &Path, upstream: u16) -> (Terminator, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls/terminator.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .arg(upstream.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the terminator's port");
    (Terminator(child), port)
}

fn ask(client: &VlmClient) -> Result<Answer, String> {
    let rgb: Vec<u8> = (0..16 * 12 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let png = Arc::new(Png::encode_rgb(16, 12, &rgb).unwrap());
    client
        .submit(Request {
            id: 7,
            query: Query::Preference {
                first: png.clone(),
                second: png,
                instruction: "pick up the red cube".into(),
            },
            hint: Some(serde_json::json!({ "progress": [0.2, 0.9] })),
        })
        .map_err(|_| "queue full".to_owned())?;
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(20), "no reply");
        if let Some(r) = client.recv_timeout(Duration::from_millis(50)) {
            assert_eq!(r.id, 7);
            return r.result.map_err(|e| e.to_string());
        }
    }
}

#[test]
fn https_with_a_trusted_certificate_answers_and_an_untrusted_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("reflex-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    private_ca(&dir);
    let oracle = Oracle::start("127.0.0.1:0".parse().unwrap(), OracleConfig::default()).unwrap();
    let upstream = oracle.base_url();
    let upstream_port: u16 = upstream
        .trim_end_matches("/v1")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (_t, port) = terminator(&dir, upstream_port);
    let cfg = |ca: bool| VlmConfig {
        base_url: format!("https://127.0.0.1:{port}/v1"),
        ca_file: ca.then(|| dir.join("ca.pem")),
        timeout_s: 5.0,
        max_retries: 0,
        ..Default::default()
    };

    let trusted = VlmClient::start(cfg(true)).unwrap();
    let answer = ask(&trusted).expect("an answer over https");
    assert_eq!(answer, Answer::Preference(Preference::Second));
    drop(trusted);

    let untrusted = VlmClient::start(cfg(false)).unwrap();
    let err = ask(&untrusted).expect_err("a server signed by an unknown CA must not be trusted");
    assert!(!err.is_empty());
    assert_eq!(untrusted.stats().failed, 1);
    drop(untrusted);

    // A missing CA file is refused naming it.
    let mut bad = cfg(true);
    bad.ca_file = Some(dir.join("nope.pem"));
    let e = VlmClient::start(bad).err().expect("refused");
    assert!(e.to_string().contains("nope.pem"), "{e}");
    oracle.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
