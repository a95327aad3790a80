#!/usr/bin/env bash
# render.sh TEMPLATE: prints TEMPLATE with every ${VAR} replaced by the environment's VAR.
# A variable the template uses but the environment lacks is an error (no silent blanks).
set -euo pipefail
template=$(<"$1")
missing=()
for var in $(grep -o '\${[A-Z_][A-Z0-9_]*}' "$1" | sort -u | tr -d '${}'); do
  if [[ -z "${!var+set}" ]]; then
    missing+=("$var")
    continue
  fi
  # Quoted: the value is inserted as it is (bash 5.2 would otherwise read `&` and `\` in it).
  template=${template//\$\{$var\}/"${!var}"}
done
if ((${#missing[@]})); then
  echo "render.sh: $1 needs: ${missing[*]}" >&2
  exit 1
fi
printf '%s\n' "$template"
