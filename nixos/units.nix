# The shipped unit files of systemd/ (the ones the .deb and .rpm install) read as data, so that the
# NixOS module runs exactly the same units: same Type=notify, watchdog, credentials and hardening.
# Only what differs on NixOS is changed by the module (paths into the Nix store, the instance's
# settings), and every change is visible in the module's source.
{ lib }:
let
  inherit (lib)
    foldl'
    hasPrefix
    head
    length
    removePrefix
    removeSuffix
    splitString
    trim
    ;

  # "[Section]" / "Key=Value" lines into { Section = { Key = [ values in file order ]; }; }.
  # Comments and blank lines are dropped; a line that is neither fails evaluation (so a unit
  # this parser does not understand cannot be half-read).
  parse =
    file:
    let
      step =
        acc: raw:
        let
          line = trim raw;
          kv = builtins.match "([A-Za-z][A-Za-z0-9]*)=(.*)" line;
          section = acc.sections.${acc.section} or { };
        in
        if line == "" || hasPrefix "#" line || hasPrefix ";" line then
          acc
        else if hasPrefix "[" line then
          acc // { section = removeSuffix "]" (removePrefix "[" line); }
        else if kv == null || acc.section == "" then
          throw "${toString file}: cannot read the line `${line}`"
        else
          let
            key = head kv;
            value = builtins.elemAt kv 1;
          in
          acc
          // {
            sections = acc.sections // {
              ${acc.section} = section // {
                ${key} = (section.${key} or [ ]) ++ [ value ];
              };
            };
          };
    in
    (foldl' step {
      section = "";
      sections = { };
    } (splitString "\n" (builtins.readFile file))).sections;

  dir = ../systemd;
in
{
  inherit parse;

  # The six templates, parsed.
  shipped = {
    keeper = parse (dir + "/stolon-keeper@.service");
    sentinel = parse (dir + "/stolon-sentinel@.service");
    proxy = parse (dir + "/stolon-proxy@.service");
    socket = parse (dir + "/stolon-proxy@.socket");
    readOnlySocket = parse (dir + "/stolon-proxy-read-only@.socket");
    target = parse (dir + "/stolon@.target");
  };

  # The lines of the shipped tmpfiles.d file (the same directories on NixOS).
  tmpfiles = builtins.filter (l: l != "" && !hasPrefix "#" l) (
    map trim (splitString "\n" (builtins.readFile ../packaging/tmpfiles.d/stolon.conf))
  );

  # A key's values as NixOS renders them: one value as a string, several as a list (one line each).
  oneOrList = values: if length values == 1 then head values else values;

  # Space-separated unit lists (After=, Wants=, WantedBy=) as a list of names.
  words =
    values: builtins.filter (w: w != "") (lib.concatMap (v: splitString " " v) values);
}
