mod loop_etcd;
mod props;
mod scenarios;
mod switchover;
mod world;
