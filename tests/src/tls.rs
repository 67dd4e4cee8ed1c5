//! TLS for the tests: a certificate authority made in the test (rcgen),
//! certificates it issues written as PEM files, and a rustls client that
//! says which certificate the node presented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use crate::{full_body, Resp, TestBody};

/// A test certificate authority.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate issued by a [`Pki`], written to disk.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Issued {
    /// `cert = "..."` and `key = "..."` lines for a TOML table.
    pub fn toml(&self) -> String {
        format!(
            "cert = {:?}\nkey = {:?}\n",
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Outpost test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// A certificate for `names`, written to `dir/{stem}.pem` and `.key`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> Issued {
        self.issue_with(dir, stem, names, |_| {})
    }

    /// `issue` with the parameters changed by `edit` first (validity...).
    pub fn issue_with(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        edit(&mut params);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// A client trusting this authority only, offering these ALPN ids.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        self.client_versions(alpn, rustls::ALL_VERSIONS)
    }

    /// `client`, limited to these TLS versions.
    pub fn client_versions(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Pki {
    /// A TLS acceptor for a test origin presenting `issued`; with
    /// `client_auth`, it requires a client certificate from this authority.
    pub fn acceptor(&self, issued: &Issued, client_auth: bool) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&issued.key).unwrap();
        let mut config = builder
            .with_single_cert(vec![issued.der.clone()], key)
            .unwrap();
        // The harness's origins speak both (hyper-util's auto builder).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// The CA certificate as a PEM file in `dir`.
    pub fn ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    /// A client trusting this authority that records the OCSP response
    /// stapled to each certificate it is shown.
    pub fn client_recording_ocsp(&self) -> (Arc<ClientConfig>, Arc<Mutex<Vec<u8>>>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let verifier = Arc::new(RecordingOcsp {
            inner,
            seen: seen.clone(),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        (Arc::new(config), seen)
    }
}

/// Verifies as webpki does, keeping the stapled OCSP response.
#[derive(Debug)]
struct RecordingOcsp {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl ServerCertVerifier for RecordingOcsp {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = ocsp_response.to_vec();
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One TLS connection to a node, and HTTP over it.
pub struct TlsConnection {
    /// The leaf certificate the node presented.
    pub certificate: CertificateDer<'static>,
    /// The protocol ALPN chose.
    pub alpn: Option<Vec<u8>>,
    /// The handshake resumed an earlier session.
    pub resumed: bool,
    sender: Sender,
}

enum Sender {
    Http1(http1::SendRequest<TestBody>),
    Http2(http2::SendRequest<TestBody>),
}

impl TlsConnection {
    /// Connects to `addr` naming `sni` (none when empty); HTTP/2 when ALPN
    /// chose it. `Err` when the handshake fails.
    pub async fn open(
        addr: SocketAddr,
        sni: &str,
        config: Arc<ClientConfig>,
    ) -> Result<TlsConnection, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut config = config;
        let name = if sni.is_empty() {
            // rustls sends no SNI for an IP address.
            Arc::make_mut(&mut config).enable_sni = false;
            ServerName::try_from("127.0.0.1").unwrap()
        } else {
            ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (_, session) = stream.get_ref();
        let certificate = session
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no certificate")?;
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::Http2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Sender::Http1(sender)
        };
        Ok(TlsConnection {
            certificate,
            alpn,
            resumed,
            sender,
        })
    }

    /// GET `path` with this Host (`:authority` on HTTP/2).
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Resp, String> {
        self.request(Method::GET, host, path, &[]).await
    }

    /// A request with no body and these extra headers.
    pub async fn request(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Resp, String> {
        let mut builder = Request::builder().method(method);
        builder = match &self.sender {
            Sender::Http1(_) => builder.uri(path).header("host", host),
            Sender::Http2(_) => builder.uri(format!("https://{host}{path}")),
        };
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(full_body(Bytes::new())).unwrap();
        let response = match &mut self.sender {
            Sender::Http1(s) => s.send_request(request).await,
            Sender::Http2(s) => s.send_request(request).await,
        }
        .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
