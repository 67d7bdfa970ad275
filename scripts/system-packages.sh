#!/usr/bin/env bash
# The Debian packages the tests use, and what is skipped without each. As root with apt-get, installs
# the missing ones; otherwise prints which tests will be skipped and the one command that enables them.
#   scripts/system-packages.sh          # check (and install where it can)
set -uo pipefail
# package  command-or-library-it-provides  the tests that need it
table='espeak-ng     espeak-ng          synthetic speech: the 5-minute bounded-memory test, translation
sox           sox                noise tests (white, pink, brown noise through a stream)
pulseaudio    pulseaudio         microphone tests (a PulseAudio null sink), dictation
pulseaudio-utils paplay          microphone tests, dictation
libportaudio2 lib:portaudio      microphone tests (sounddevice), dictation
libasound2-plugins lib:asound_module_pcm_pulse  microphone tests through ALSA to PulseAudio
chromium      chromium           the browser caption page (headless Chromium, fake microphone)
xvfb          Xvfb               desktop dictation (a virtual X display)
xdotool       xdotool            desktop dictation (typing into a window)
haproxy       haproxy            the load-balancer test (three replicas behind HAProxy)
ffmpeg        ffmpeg             the OpenAI transcription endpoint reading an Ogg/Opus upload
libjemalloc2  lib:libjemalloc    the daemon on jemalloc (its smaller, flat heap)'
missing=()
reasons=()
have() {
    case $1 in
    lib:*) ldconfig -p 2>/dev/null | grep -q "${1#lib:}" ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}
while read -r package provides why; do
    if ! have "$provides"; then
        missing+=("$package")
        reasons+=("  $package: $why")
    fi
done <<< "$table"
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing the Debian packages the tests use: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        exit 0
    fi
    echo "apt-get could not install them" >&2
fi
echo "these tests will be skipped: the Debian packages they need are missing:" >&2
printf '%s\n' "${reasons[@]}" >&2
echo "to run them too: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
exit 0
