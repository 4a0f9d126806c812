mod props;
mod scenarios;
mod world;
