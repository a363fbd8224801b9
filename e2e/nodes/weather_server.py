"""The stand-in for the weather example (examples/weather-sse.yaml): an official Python SDK server
over the legacy HTTP+SSE transport with the example's two tools, answering from fixed data (the
cluster has no route outside). The python-mcp stand-in image runs it as `python -m weather_server`.

usage: python -m weather_server --transport sse --port PORT
"""
import argparse

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("weather")


@mcp.tool()
def get_forecast(latitude: float, longitude: float) -> str:
    """The forecast for a point (fixed data: the stand-in has no weather service)."""
    return f"Forecast for {latitude:.2f},{longitude:.2f}: clear, 18 C, wind 10 km/h"


@mcp.tool()
def get_alerts(state: str) -> str:
    """Active weather alerts for a US state (two-letter code)."""
    return f"No active alerts for {state}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="weather_server")
    parser.add_argument("--transport", choices=["sse"], default="sse")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    mcp.run(args.transport, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
