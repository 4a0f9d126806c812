mod scenarios;
mod world;
