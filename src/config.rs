//! OWNER: ctl/config helper.
