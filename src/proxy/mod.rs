//! The proxy: sends every client to the elected master and cuts them off from any other.
//! OWNER: proxy helper.

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen_address: String,
    pub port: u16,
    /// Close the listening socket when the store cannot be read for proxyTimeout.
    pub stop_listening: bool,
    /// Seconds; 0 = OS default.
    pub tcp_keepalive_idle: u32,
    pub tcp_keepalive_count: u32,
    pub tcp_keepalive_interval: u32,
}
