"""Opt-in image fetching by URL, refusing private targets (SSRF): every resolved address is checked,
on every redirect hop, and the connection goes to the checked address (no DNS rebinding)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

from .errors import ApiError
from .settings import Settings

#: ``resolve(host, port) -> addresses``; injectable so tests never reach a real resolver.
Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_REDIRECTS = 5


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host`` (IPv4 and IPv6)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def forbidden_reason(address: str, allow_loopback: bool = False) -> str | None:
    """Why an address must not be fetched (private, loopback, link-local, ...), or None if public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    for reason in ("link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{reason}"):
            return reason.replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


async def check_target(url: str, settings: Settings, resolve: Resolver) -> tuple[str, str, int, str]:
    """(scheme, host, port, pinned address) of a URL whose every address is public; else a 4xx."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "invalid_url", f"url: expected an http:// or https:// URL with a host, got {url[:200]!r}")
    if parts.username or parts.password:
        raise ApiError(400, "invalid_url", "url: credentials in the URL are not accepted")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ApiError(400, "invalid_url", f"url: invalid port in {url[:200]!r}") from None
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = await asyncio.wait_for(resolve(host, port), timeout=settings.url_fetch_timeout_s)
        except (OSError, asyncio.TimeoutError, UnicodeError):
            addresses = []
        if not addresses:
            raise ApiError(400, "url_unresolvable", f"url: the host {host!r} does not resolve") from None
    for address in addresses:
        reason = forbidden_reason(address, settings.url_fetch_allow_loopback)
        if reason is not None:
            raise ApiError(
                403,
                "url_forbidden_target",
                f"url: {host!r} resolves to {address} ({reason}); only public addresses are fetched",
            )
    return parts.scheme, host, port, addresses[0]


async def fetch_url(url: str, settings: Settings, resolve: Resolver = system_resolve) -> bytes:
    """The body of ``url`` (redirects followed and re-checked), at most ``max_body_bytes`` long,
    within ``url_fetch_timeout_s``; refused with a 4xx when disabled or aimed at a private target."""
    if not settings.allow_url_fetch:
        raise ApiError(
            403,
            "url_fetch_disabled",
            "url: fetching images from URLs is disabled on this server "
            "(start it with --allow-url-fetch); upload the image bytes instead",
        )
    try:
        return await asyncio.wait_for(_fetch(url, settings, resolve), timeout=settings.url_fetch_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(
            400, "url_fetch_failed", f"url: no complete answer within {settings.url_fetch_timeout_s} s"
        ) from None


async def _fetch(url: str, settings: Settings, resolve: Resolver) -> bytes:
    import httpx

    limit = settings.max_body_bytes
    timeout = httpx.Timeout(settings.url_fetch_timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as http:
        for _hop in range(MAX_REDIRECTS + 1):
            scheme, host, port, address = await check_target(url, settings, resolve)
            parts = urlsplit(url)
            netloc = f"[{address}]" if ":" in address else address
            pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "image/*"}
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            try:
                async with http.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise ApiError(400, "url_fetch_failed", f"url: the server answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > limit:
                        raise ApiError(
                            413,
                            "payload_too_large",
                            f"url: the image of {declared} bytes exceeds the limit of {limit} bytes",
                        )
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise ApiError(
                                413, "payload_too_large", f"url: the image exceeds the limit of {limit} bytes"
                            )
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as err:
                raise ApiError(400, "url_fetch_failed", f"url: fetching failed ({type(err).__name__})") from None
    raise ApiError(400, "url_fetch_failed", f"url: more than {MAX_REDIRECTS} redirects")
