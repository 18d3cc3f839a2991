"""Seed 004 Python client code, kept as written in the seed.  Changes, all marked CHANGED:
the example image (nothing can be pulled here) is the suite's test image plus a command,
and the module-level "Usage" lines are left out (they would run at import).
Used by tests/integration/t080_seed_clients.py."""
import base64
import os
import time

# ---------------------------------------------------------------- Create Container
import requests
import json

TEST_IMAGE = os.environ.get("CM_TEST_IMAGE", "cm-test-busybox:latest")  # CHANGED (added)


# Create container with Python example
def create_container(base_url, auth_headers):
    payload = {
        "image": TEST_IMAGE,  # CHANGED: was "python:3.12-slim"
        "command": ["sleep", "3600"],  # CHANGED (added): the test image has no python
        "env": {
            "APP_ENV": "production",
            "DEBUG": "false"
        },
        "tags": ["web", "production"],
        "resources": {
            "cpus": 1.0,
            "memory": "4096m",
            "pids": 2048
        },
        "ports": [
            {
                "host": 8080,
                "container": 80,
                "protocol": "tcp"
            }
        ]
    }

    response = requests.post(
        f"{base_url}/containers",
        json=payload,
        headers=auth_headers
    )

    if response.status_code == 201:
        container = response.json()
        print(f"Created container: {container['cuid']}")
        return container['cuid']
    else:
        print(f"Error: {response.json()}")
        return None


# ---------------------------------------------------------------- Port Management
# Update container ports
def update_ports(base_url, cuid, auth_headers):
    new_ports = {
        "ports": [
            {"host": 3000, "container": 3000, "protocol": "tcp"},
            {"host": 9000, "container": 9000, "protocol": "udp"}
        ]
    }

    response = requests.patch(
        f"{base_url}/containers/{cuid}/ports",
        json=new_ports,
        headers=auth_headers
    )

    return response.status_code == 200


# ---------------------------------------------------------------- Error Handling Example
def safe_api_call(func):
    """Decorator for safe API calls with retry logic"""
    def wrapper(*args, **kwargs):
        max_retries = 3
        retry_delay = 1

        for attempt in range(max_retries):
            try:
                response = func(*args, **kwargs)

                if response.status_code >= 500:
                    # Server error, retry
                    if attempt < max_retries - 1:
                        time.sleep(retry_delay * (attempt + 1))
                        continue

                if response.status_code >= 400:
                    # Client error, don't retry
                    error = response.json()
                    print(f"API Error: {error['message']} (ID: {error['request_id']})")
                    return None

                return response.json()

            except requests.exceptions.RequestException as e:
                print(f"Network error (attempt {attempt + 1}): {e}")
                if attempt < max_retries - 1:
                    time.sleep(retry_delay * (attempt + 1))
                else:
                    raise

        return None

    return wrapper


@safe_api_call
def get_container_status(base_url, cuid, headers):
    return requests.get(f"{base_url}/containers/{cuid}/status", headers=headers)


# ---------------------------------------------------------------- 1. Connection Pooling
# Use session for connection pooling
class APIClient:
    def __init__(self, base_url, username, password):
        self.base_url = base_url
        self.session = requests.Session()
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.session.headers.update({"Authorization": f"Basic {auth}"})

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.session.close()

    def create_container(self, config):
        return self.session.post(f"{self.base_url}/containers", json=config)


# ---------------------------------------------------------------- 2. Async Operations
import aiohttp
import asyncio


class AsyncAPIClient:
    def __init__(self, base_url, username, password):
        self.base_url = base_url
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {auth}"}

    async def __aenter__(self):
        self.session = aiohttp.ClientSession(headers=self.headers)
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb):
        await self.session.close()

    async def batch_create(self, configs):
        tasks = []
        for config in configs:
            task = self.session.post(f"{self.base_url}/containers", json=config)
            tasks.append(task)

        responses = await asyncio.gather(*tasks)
        return [await r.json() for r in responses]


# ---------------------------------------------------------------- 3. Health Monitoring
import threading


class HealthMonitor:
    def __init__(self, base_url, auth_headers, check_interval=30):
        self.base_url = base_url
        self.headers = auth_headers
        self.check_interval = check_interval
        self.running = False
        self.thread = None

    def start(self):
        self.running = True
        self.thread = threading.Thread(target=self._monitor_loop)
        self.thread.daemon = True
        self.thread.start()

    def stop(self):
        self.running = False
        if self.thread:
            self.thread.join()

    def _monitor_loop(self):
        while self.running:
            try:
                response = requests.get(
                    f"{self.base_url}/healthz",
                    headers=self.headers,
                    timeout=5
                )

                if response.status_code == 200:
                    data = response.json()
                    print(f"API healthy: Compose {data['compose_version']}")
                else:
                    print(f"API unhealthy: Status {response.status_code}")

            except Exception as e:
                print(f"Health check failed: {e}")

            time.sleep(self.check_interval)
