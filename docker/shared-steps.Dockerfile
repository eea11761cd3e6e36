# The steps every bundle image shares. NOT a Dockerfile to build: each bundles/<bundle>/Dockerfile carries verbatim
# copies of these blocks between `# >>> shared: NAME` and `# <<< shared: NAME` lines, so that file reads (and
# builds) on its own. Edit a block here, then run `nox -s dockerfiles` to rewrite every copy; until then
# tests/test_dockerfiles.py and `nox -s lint` fail naming the bundle and the block (the copies cannot drift).
#
# What a bundle's own Dockerfile says around these blocks: its base images and pins (global ARGs checked against
# manifest.toml and requirements.txt), which requirements file it installs, Ascend extras (ais_bench for
# inference, torch_npu for training), ENV ZOO_BUNDLE, USER, ENTRYPOINT and CMD.
#
# Conventions the blocks rely on: build context = the repository root, holding wheelhouse/ (`nox -s wheelhouse`);
# BuildKit (Docker >= 20.10, no `# syntax=` line: the builder's own Dockerfile frontend, no registry contacted);
# the bundle COPYs its requirements file to /opt/zoo/requirements.txt before `pip-wheelhouse`; global ARGs
# PYTHON_VERSION, TORCH_VERSION, TORCH_NPU_VERSION (may be empty), UPSTREAM_COMMIT; ENV ZOO_BUNDLE before `labels`.
#
# Offline (default): pip installs only from the wheelhouse, bind-mounted for that one step, never in a layer.
# Online: --build-arg PIP_INDEX_URL=https://pypi.org/simple (torch then resolves from PIP_EXTRA_INDEX_URL, the
# PyTorch CPU index). Behind a TLS-intercepting proxy: `--secret id=ca,src=/path/to/ca.pem`, read from
# /run/secrets/ca during the step and never stored. Build args appear in `docker history`: no credentials in URLs.


# >>> shared: cpu-base
# A venv owned by the image (not the base's site-packages) and the unprivileged user the image runs as.
ENV ZOO_CACHE=/out/.cache PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv && useradd --uid 1000 --create-home --shell /bin/bash zoo
# <<< shared: cpu-base


# >>> shared: ascend-base
# --system-site-packages: ATC's operator compiler imports the Python packages of the CANN image. uid 1000 may
# already exist there (HwHiAiUser): reuse it. Device access needs the host's device group: the doctor's
# `docker run` line adds it with --group-add. The bashrc line serves interactive shells; the entrypoint sources
# set_env.sh itself (`docker run` starts no login shell).
ENV ZOO_CACHE=/out/.cache PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv --system-site-packages /opt/venv \
    && { getent passwd 1000 >/dev/null || useradd --uid 1000 --create-home --shell /bin/bash zoo; } \
    && echo '. /usr/local/Ascend/ascend-toolkit/set_env.sh' >> /etc/bash.bashrc
# <<< shared: ascend-base


# >>> shared: pip-wheelhouse
# Third-party packages, exactly as /opt/zoo/requirements.txt pins them: rebuilt only when that file or the
# wheelhouse changes. Offline unless PIP_INDEX_URL is given; the CA secret is used for this step only.
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=bind,source=wheelhouse,target=/wheels \
    --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    pip install --find-links /wheels $([ -n "$PIP_INDEX_URL" ] || echo --no-index) -r /opt/zoo/requirements.txt
# <<< shared: pip-wheelhouse


# >>> shared: check-pins
# The pins this Dockerfile states (its global ARGs) are what the image holds: Python, torch and, where
# installed, torch_npu (which must match torch).
ARG PYTHON_VERSION
ARG TORCH_VERSION
ARG TORCH_NPU_VERSION
RUN set -eu; \
    py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
    torch=$(pip show torch 2>/dev/null | sed -n 's/^Version: //p'); \
    npu=$(pip show torch_npu 2>/dev/null | sed -n 's/^Version: //p'); \
    [ "$py" = "$PYTHON_VERSION" ] || { echo "Python is $py; this Dockerfile pins PYTHON_VERSION=$PYTHON_VERSION" >&2; exit 1; }; \
    [ "${torch%%+*}" = "$TORCH_VERSION" ] || { echo "torch is '$torch'; this Dockerfile pins TORCH_VERSION=$TORCH_VERSION" >&2; exit 1; }; \
    [ -z "$npu" ] || [ "$npu" = "$TORCH_NPU_VERSION" ] || { echo "torch_npu is $npu; this Dockerfile pins TORCH_NPU_VERSION=$TORCH_NPU_VERSION" >&2; exit 1; }
# <<< shared: check-pins


# >>> shared: zoo-install
# The zoo itself, last: a code-only change rebuilds from here in seconds. Installed from the build context
# (bind-mounted read-write, so build droppings vanish) with the setuptools pinned in requirements.txt; the
# bundles' manifests and upstream key lists ship as package data.
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/zoo-entrypoint
RUN --mount=type=bind,target=/src,rw \
    pip install --no-deps --no-index --no-build-isolation /src && zoo --help >/dev/null
# <<< shared: zoo-install


# >>> shared: labels
# Labels last: the revision changes with every commit and must not invalidate the layers above. The build
# helper (common/images.py) passes the revision, source and manifest hash; the rest are this file's pins.
ARG ZOO_REVISION=unknown
ARG ZOO_SOURCE=unknown
ARG MANIFEST_SHA256=unknown
ARG UPSTREAM_COMMIT
ARG PYTHON_VERSION
ARG TORCH_VERSION
# the zoo commit for every run report made in the image (there is no .git inside)
ENV ZOO_COMMIT=${ZOO_REVISION}
LABEL org.opencontainers.image.title="zoo/${ZOO_BUNDLE}" org.opencontainers.image.revision="${ZOO_REVISION}" \
      org.opencontainers.image.source="${ZOO_SOURCE}" zoo.bundle="${ZOO_BUNDLE}" \
      zoo.manifest.sha256="${MANIFEST_SHA256}" zoo.upstream.commit="${UPSTREAM_COMMIT}" \
      zoo.python="${PYTHON_VERSION}" zoo.torch="${TORCH_VERSION}"
# <<< shared: labels


# >>> shared: ais-bench-wheels
# aclruntime + ais_bench (inference bundles' Ascend target) are not on PyPI and report 0.0.2 across API changes:
# built from the pinned Ascend/tools commit, its source tarball checked against AIS_BENCH_SHA256. Put the tarball
# at docker/vendor/tools-<commit>.tar.gz in the context, or let the build download AIS_BENCH_URL.
# backend/setup.py links the CANN *stub* libascendcl.so, so no NPU is needed to build; its build requirements
# setuptools, wheel, pybind11>=2.8 come from the wheelhouse or the index, and g++ from the image.
ARG AIS_BENCH_COMMIT
ARG AIS_BENCH_SHA256
ARG AIS_BENCH_URL=https://github.com/Ascend/tools/archive/${AIS_BENCH_COMMIT}.tar.gz
ARG PIP_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,source=docker,target=/ctx \
    --mount=type=bind,source=wheelhouse,target=/wheels \
    --mount=type=secret,id=ca \
    set -eu; \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca; fi; \
    test -n "$AIS_BENCH_SHA256" || { echo "set --build-arg AIS_BENCH_SHA256=<sha256 of the Ascend/tools ${AIS_BENCH_COMMIT} tarball>" >&2; exit 1; }; \
    tarball=/ctx/vendor/tools-${AIS_BENCH_COMMIT}.tar.gz; \
    if [ ! -f "$tarball" ]; then tarball=/tmp/tools.tar.gz; \
      python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$AIS_BENCH_URL" "$tarball"; fi; \
    echo "$AIS_BENCH_SHA256  $tarball" | sha256sum -c -; \
    mkdir /tmp/tools && tar -xzf "$tarball" -C /tmp/tools --strip-components=1; \
    cd /tmp/tools/ais-bench_workload/tool/ais_bench; \
    cp Readme.md README.md; \
    export CANN_PATH=/usr/local/Ascend/ascend-toolkit/latest; \
    offline=$([ -n "$PIP_INDEX_URL" ] || echo --no-index); \
    pip3 wheel --no-deps --find-links /wheels $offline -w /ais-wheels ./backend/ ./; \
    rm -rf /tmp/tools /tmp/tools.tar.gz
# <<< shared: ais-bench-wheels
