//! An HTTP proxy in front of emulator, request by request: it can hold each
//! request back (AWS's round trips; moto answers in milliseconds), answer
//! instead of moto with the faults AWS has (throttling, 500, 503, a dropped
//! connection) on a seeded fraction of calls, refuse one operation for good
//! (access denied, a quota), and call back before and after forwarding
//! (to kill the client at an exact point).
//!
//! Every request goes to moto on a connection of its own with
//! `Connection: close`, and the answer goes back with `Connection: close`:
//! no framing to get wrong, at the cost of a connection per call.

use base64::Engine;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// Counted from 1 in arrival order.
    pub number: usize,
    /// From the signature's scope: ec2, rds, s3, iam, sts, logs, tagging.
    pub service: String,
    /// e.g. RunInstances; "S3 PUT /bucket" for S3's REST calls.
    pub operation: String,
    /// The SDK's attempt number (1 for the first try).
    pub attempt: u32,
    /// The answer's HTTP status, at `Stage::Answered` (0 before).
    pub status: u16,
}

impl Request {
    /// Whether it only reads (safe to lose the answer of and send again).
    pub fn is_read(&self) -> bool {
        if let Some(call) = self.operation.strip_prefix("S3 ") {
            return call.starts_with("GET ") || call.starts_with("HEAD ");
        }
        ["Describe", "Get", "List"]
            .iter()
            .any(|p| self.operation.starts_with(p))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Throttle,
    Internal500,
    Unavailable503,
    /// Closed without an answer, before the request reached moto.
    Drop,
    /// A read reached emulator, and its answer was lost on the way back.
    LoseAnswer,
}

/// The fractions of requests a bad link spoils.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Answered 503 in the service's shape (EC2 `Unavailable`, S3 and the
    /// others `ServiceUnavailable`).
    pub unavailable: f64,
    /// Throttled in the service's shape (EC2 `RequestLimitExceeded` 503,
    /// S3 `SlowDown` 503, query `Throttling` 400, JSON `ThrottlingException`
    /// 400).
    pub throttle: f64,
    /// The connection closed after the request was read, without an answer
    /// (the request never reaches the emulator).
    pub drop: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Received,
    Answered,
}

pub type Hook = Arc<dyn Fn(&Request, Stage) + Send + Sync>;

#[derive(Clone, Default)]
pub struct Options {
    pub delay: Duration,
    /// (seed, fraction of calls) for transient faults. Only first and
    /// second attempts are hit, so the SDK's third attempt gets through.
    pub faults: Option<(u64, f64)>,
    /// A bad link: (seed, rates) of faults on every request, whatever its
    /// attempt (three in a row happen).
    pub link: Option<(u64, Link)>,
    /// Operations answered with this AWS error code, always.
    pub deny: HashMap<String, &'static str>,
    /// Denials quote the request's parameters in their message, as some
    /// AWS validation errors do: decoded, or (`echo_as_sent`) in the
    /// request's own encoding.
    pub echo: bool,
    pub echo_as_sent: bool,
    /// Operations whose first answer is lost after moto did them (a write
    /// done by AWS whose answer never arrives).
    pub lose_first_answer: std::collections::HashSet<String>,
    /// Operations whose first request is answered with a 500 before it
    /// reaches the emulator (a fault that leaves nothing done).
    pub fail_first: std::collections::HashSet<String>,
    /// An image left out of every DescribeImages answer while set: it
    /// "appears" (as if NixOS published it) when the test clears it.
    pub hidden_image: Option<Arc<Mutex<Option<String>>>>,
    /// What GetConsoleOutput answers the server printed (moto prints a
    /// fixed text of its own).
    pub console_output: Option<Arc<Mutex<String>>>,
    /// RunInstances answered as AWS does with a `ClientToken` (moto
    /// ignores it): a request with a token already used gets the first
    /// request's answer, without reaching the emulator.
    pub client_tokens: bool,
    /// Operations always answered 503 (AWS down for them).
    pub unavailable: std::collections::HashSet<String>,
    pub hook: Option<Hook>,
    /// Sends every request as this account: the access key in the
    /// signature's scope is replaced by it (LocalStack takes a 12-digit
    /// access key as the account id, and checks no signatures).
    pub account: Option<String>,
    /// Where the upstream port is (default 127.0.0.1).
    pub upstream_host: Option<String>,
}

pub struct Proxy {
    pub port: u16,
    stopped: Arc<AtomicBool>,
    injected: Arc<Mutex<Vec<(Request, Fault)>>>,
    requests: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<String>>>,
    recorded: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start(upstream: u16, options: Options) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stopped = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream,
            lost: Mutex::default(),
            options,
            injected: injected.clone(),
            requests: requests.clone(),
            received: received.clone(),
            recorded: recorded.clone(),
            launched: Mutex::default(),
        });
        let stop = stopped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || shared.serve(client));
            }
        });
        Proxy {
            port,
            stopped,
            injected,
            requests,
            received,
            recorded,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The faults injected so far.
    pub fn injected(&self) -> Vec<(Request, Fault)> {
        self.injected.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The operation of every request received so far, in order, named as
    /// `Emulator::actions` names them.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Every request received so far, as moto records them: one JSON object
    /// per line (method, url, headers, body in base64).
    pub fn recording(&self) -> String {
        self.recorded.lock().unwrap().join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Shared {
    upstream: u16,
    /// Operations whose first answer was lost (or failed) already.
    lost: Mutex<std::collections::HashSet<String>>,
    options: Options,
    injected: Arc<Mutex<Vec<(Request, Fault)>>>,
    requests: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<String>>>,
    recorded: Arc<Mutex<Vec<String>>>,
    /// RunInstances answers by client token (see `Options::client_tokens`).
    launched: Mutex<HashMap<String, Vec<u8>>>,
}

/// splitmix64: a seeded, well-spread number per request.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Shared {
    fn serve(&self, mut client: TcpStream) {
        let Some((head, body)) = read_request(&mut client) else {
            return;
        };
        // Recorded as the client sent it (its own credentials).
        let as_sent = recorded(&head, &body);
        let head = match &self.options.account {
            Some(account) => as_account(&head, account),
            None => head,
        };
        let mut received = self.received.lock().unwrap();
        let number = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let request = describe(number, &head, &body);
        // The stack's lock is a log group of its own.
        if request.service == "logs" && String::from_utf8_lossy(&body).contains("/ihp-infra/locks/")
        {
            received.push(format!("{} (lock)", request.operation));
        } else {
            received.push(request.operation.clone());
        }
        drop(received);
        self.recorded.lock().unwrap().push(as_sent);
        if !self.options.delay.is_zero() {
            std::thread::sleep(self.options.delay);
        }
        if let Some(hook) = &self.options.hook {
            hook(&request, Stage::Received);
        }
        if let Some(code) = self.options.deny.get(&request.operation) {
            let message = if self.options.echo_as_sent {
                format!(
                    "denied by the test proxy: {}",
                    String::from_utf8_lossy(&body)
                )
            } else if self.options.echo {
                let body = String::from_utf8_lossy(&body).replace('+', " ");
                let decoded = percent_encoding::percent_decode_str(&body).decode_utf8_lossy();
                format!("denied by the test proxy: {decoded}")
            } else {
                "denied by the test proxy".to_string()
            };
            let _ = client.write_all(&error_response(&request.service, 400, code, &message));
            return;
        }
        let lose = self.options.lose_first_answer.contains(&request.operation)
            && self.lost.lock().unwrap().insert(request.operation.clone());
        let fail = self.options.fail_first.contains(&request.operation)
            && self.lost.lock().unwrap().insert(request.operation.clone());
        let fault = if lose {
            Some(Fault::LoseAnswer)
        } else if self.options.unavailable.contains(&request.operation) {
            Some(Fault::Unavailable503)
        } else if fail {
            Some(Fault::Internal500)
        } else {
            self.fault(&request)
        };
        if let Some(fault) = fault {
            self.injected.lock().unwrap().push((request.clone(), fault));
        }
        let answer = match fault {
            Some(Fault::Drop) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Throttle) => {
                let (status, code) = match request.service.as_str() {
                    "ec2" => (503, "RequestLimitExceeded"),
                    "s3" => (503, "SlowDown"),
                    "logs" | "tagging" | "ssm" => (400, "ThrottlingException"),
                    _ => (400, "Throttling"),
                };
                error_response(&request.service, status, code, "Rate exceeded")
            }
            Some(Fault::Internal500) => error_response(
                &request.service,
                500,
                "InternalError",
                "We encountered an internal error",
            ),
            Some(Fault::Unavailable503) => error_response(
                &request.service,
                503,
                if request.service == "ec2" {
                    "Unavailable"
                } else {
                    "ServiceUnavailable"
                },
                "Service is unavailable",
            ),
            Some(Fault::LoseAnswer) | None => {
                let token = (self.options.client_tokens && request.operation == "RunInstances")
                    .then(|| client_token(&body))
                    .flatten();
                let earlier = token
                    .as_ref()
                    .and_then(|t| self.launched.lock().unwrap().get(t).cloned());
                match earlier {
                    Some(answer) => answer,
                    None => match self.forward(&head, &body) {
                        Some(answer) => {
                            if let Some(token) = token {
                                self.launched.lock().unwrap().insert(token, answer.clone());
                            }
                            answer
                        }
                        None => return,
                    },
                }
            }
        };
        let answer = match &self.options.hidden_image {
            Some(hidden) if request.operation == "DescribeImages" => {
                match hidden.lock().unwrap().as_deref() {
                    Some(image) => without_image(answer, image),
                    None => answer,
                }
            }
            _ => answer,
        };
        let answer = match &self.options.console_output {
            Some(text) if request.operation == "GetConsoleOutput" => {
                with_console_output(answer, &text.lock().unwrap())
            }
            _ => answer,
        };
        if let Some(hook) = &self.options.hook {
            let status = std::str::from_utf8(&answer[..answer.len().min(16)])
                .ok()
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            hook(
                &Request {
                    status,
                    ..request.clone()
                },
                Stage::Answered,
            );
        }
        if fault == Some(Fault::LoseAnswer) {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let _ = client.write_all(&answer);
        let _ = client.shutdown(Shutdown::Write);
    }

    fn fault(&self, request: &Request) -> Option<Fault> {
        if let Some((seed, link)) = self.options.link {
            let roll = (mix(seed ^ mix(request.number as u64)) % 10_000) as f64 / 10_000.0;
            let mut bound = link.unavailable;
            if roll < bound {
                return Some(Fault::Unavailable503);
            }
            bound += link.throttle;
            if roll < bound {
                return Some(Fault::Throttle);
            }
            bound += link.drop;
            return (roll < bound).then_some(Fault::Drop);
        }
        let (seed, rate) = self.options.faults?;
        if request.attempt >= 3 {
            return None;
        }
        let roll = mix(seed ^ mix(request.number as u64));
        if (roll % 10_000) as f64 >= rate * 10_000.0 {
            return None;
        }
        let kinds: &[Fault] = if request.is_read() {
            &[
                Fault::Throttle,
                Fault::Internal500,
                Fault::Unavailable503,
                Fault::Drop,
                Fault::LoseAnswer,
            ]
        } else {
            // A write whose answer is lost may be done twice by the SDK's
            // retry, on AWS as here: only faults before it arrives.
            &[
                Fault::Throttle,
                Fault::Internal500,
                Fault::Unavailable503,
                Fault::Drop,
            ]
        };
        Some(kinds[(mix(roll) % kinds.len() as u64) as usize])
    }

    fn forward(&self, head: &str, body: &[u8]) -> Option<Vec<u8>> {
        let host = self.options.upstream_host.as_deref().unwrap_or("127.0.0.1");
        let mut server = TcpStream::connect((host, self.upstream)).ok()?;
        let mut out = String::new();
        for (i, line) in head.split("\r\n").enumerate() {
            if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
                continue;
            }
            if !line.is_empty() {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        server.write_all(out.as_bytes()).ok()?;
        server.write_all(body).ok()?;
        let mut answer = Vec::new();
        server.read_to_end(&mut answer).ok()?;
        Some(with_connection_close(answer))
    }
}

/// Reads one request: its head (up to the blank line) and its body.
fn read_request(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(client.try_clone().ok()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// The `ClientToken` of a query request's form body.
fn client_token(body: &[u8]) -> Option<String> {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("ClientToken="))
        .map(str::to_string)
}

/// One request in the shape of moto's recording.
fn recorded(head: &str, body: &[u8]) -> String {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("");
    let target = first.next().unwrap_or("/");
    let headers: serde_json::Map<String, serde_json::Value> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_string(), value.trim().into()))
        .collect();
    let host = header(head, "host").unwrap_or("localhost");
    serde_json::json!({
        "method": method,
        "url": format!("http://{host}{target}"),
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "body_encoded": true,
    })
    .to_string()
}

/// The request's head with `account` as the access key of its signature.
fn as_account(head: &str, account: &str) -> String {
    head.split("\r\n")
        .map(|line| match line.split_once(':') {
            Some((key, value)) if key.trim().eq_ignore_ascii_case("authorization") => {
                match value.split_once("Credential=") {
                    Some((before, after)) => {
                        let scope = after.split_once('/').map_or("", |(_, scope)| scope);
                        format!("{key}:{before}Credential={account}/{scope}")
                    }
                    None => line.to_string(),
                }
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn describe(number: usize, head: &str, body: &[u8]) -> Request {
    // Credential=test/20261125/eu-central-1/ec2/aws4_request
    let service = header(head, "authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("unknown")
        .to_string();
    let body_text = String::from_utf8_lossy(body);
    let operation = if let Some(target) = header(head, "x-amz-target") {
        target.rsplit('.').next().unwrap_or_default().to_string()
    } else if let Some(action) = body_text
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
    {
        action.to_string()
    } else {
        let mut first = head.split_whitespace();
        let method = first.next().unwrap_or("");
        let path = first.next().unwrap_or("");
        format!("S3 {method} {}", path.split('?').next().unwrap_or(""))
    };
    // amz-sdk-request: attempt=2; max=3
    let attempt = header(head, "amz-sdk-request")
        .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("attempt=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Request {
        number,
        service,
        operation,
        attempt,
        status: 0,
    }
}

/// An AWS error answer in the service's protocol.
fn error_response(service: &str, status: u16, code: &str, message: &str) -> Vec<u8> {
    let json_message = serde_json::to_string(message).unwrap();
    let json_message = json_message.trim_matches('"');
    let xml_message = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let message = if matches!(service, "logs" | "tagging" | "ssm") {
        json_message.to_string()
    } else {
        xml_message
    };
    let (content_type, body) = match service {
        // The JSON protocol's services.
        "logs" | "tagging" | "ssm" => (
            "application/x-amz-json-1.1",
            format!(r#"{{"__type":"{code}","message":"{message}"}}"#),
        ),
        "ec2" => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy</RequestID></Response>"
            ),
        ),
        "s3" => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>proxy</RequestId></Error>"
            ),
        ),
        _ => (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy</RequestId></ErrorResponse>"
            ),
        ),
    };
    let reason = match status {
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-ErrorType: {code}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A DescribeImages answer without the `<item>` of `image` among the
/// `imagesSet`'s items (which nest items of their own).
fn without_image(answer: Vec<u8>, image: &str) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer;
    };
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let body = String::from_utf8_lossy(&answer[end + 4..]).into_owned();
    let id = format!("<imageId>{image}</imageId>");
    let Some(mut at) = body.find("<imagesSet>") else {
        return answer;
    };
    // Each top-level item: [its start, its end).
    let (mut depth, mut item_start, mut cut) = (0, 0, None);
    while cut.is_none() {
        let open = body[at..].find("<item>").map(|i| i + at);
        let close = body[at..].find("</item>").map(|i| i + at);
        match (open, close) {
            (Some(o), Some(c)) if o < c => {
                if depth == 0 {
                    item_start = o;
                }
                depth += 1;
                at = o + "<item>".len();
            }
            (_, Some(c)) => {
                depth -= 1;
                at = c + "</item>".len();
                if depth == 0 && body[item_start..at].contains(&id) {
                    cut = Some((item_start, at));
                }
            }
            _ => return answer,
        }
    }
    let (from, to) = cut.unwrap_or_default();
    with_body(&head, &format!("{}{}", &body[..from], &body[to..]))
}

/// An answer with `head` and a new `body` (its length set to match).
fn with_body(head: &str, body: &str) -> Vec<u8> {
    let head: Vec<String> = head
        .split("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                line.to_string()
            }
        })
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

/// A GetConsoleOutput answer whose output is `text` (base64, as EC2 sends it).
fn with_console_output(answer: Vec<u8>, text: &str) -> Vec<u8> {
    use base64::Engine;
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer;
    };
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let body = String::from_utf8_lossy(&answer[end + 4..]).into_owned();
    let output = format!(
        "<output>{}</output>",
        base64::engine::general_purpose::STANDARD.encode(text)
    );
    let body = match (body.find("<output>"), body.find("</output>")) {
        (Some(from), Some(to)) => format!("{}{output}{}", &body[..from], &body[to + 9..]),
        _ => body.replacen(
            "</GetConsoleOutputResponse>",
            &format!("{output}</GetConsoleOutputResponse>"),
            1,
        ),
    };
    with_body(&head, &body)
}

/// Makes sure the client opens a new connection for its next call.
fn with_connection_close(answer: Vec<u8>) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer;
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut out = String::new();
    for line in head.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&answer[end + 4..]);
    bytes
}
