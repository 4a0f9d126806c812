# The keys each role's TOML file accepts: the role's flag names (src/config/flags.rs; the file
# layer refuses any other key, and `config` itself). nixos/check.sh fails when this list and
# flags.rs disagree.
let
  common = [
    "cluster-name"
    "store-backend"
    "store-endpoints"
    "store-timeout"
    "store-prefix"
    "store-cert-file"
    "store-key"
    "store-ca-file"
    "store-user"
    "store-password-file"
    "store-skip-tls-verify"
    "metrics-listen-address"
    "kube-resource-kind"
    "log-level"
  ];
  daemon = [
    "log-color"
    "debug"
  ];
in
{
  keeper = common ++ daemon ++ [
    "uid"
    "id"
    "data-dir"
    "pg-listen-address"
    "pg-advertise-address"
    "pg-port"
    "pg-advertise-port"
    "pg-socket-dir"
    "pg-bin-path"
    "pg-repl-auth-method"
    "pg-repl-username"
    "pg-repl-password"
    "pg-repl-passwordfile"
    "pg-trust-networks"
    "pg-su-auth-method"
    "pg-su-username"
    "pg-su-password"
    "pg-su-passwordfile"
    "can-be-master"
    "priority"
    "can-be-synchronous-replica"
    "disable-data-dir-locking"
    "api-listen-address"
  ];
  sentinel = common ++ daemon ++ [ "initial-cluster-spec" ];
  proxy = common ++ daemon ++ [
    "listen-address"
    "port"
    "stop-listening"
    "tcp-keepalive-idle"
    "tcp-keepalive-count"
    "tcp-keepalive-interval"
    "max-connections"
    "client-startup-timeout"
    "hold-timeout"
    "read-only-listen-address"
    "read-only-port"
    "read-only-fallback-master"
    "kernel-forwarding"
  ];
  stolonctl = common ++ [
    "kubeconfig"
    "kube-context"
    "kube-namespace"
  ];
}
