"""HTTP errors as `{"code", "message"}` with the status the error code maps to."""

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from switchboard_contracts.errors import HTTP_STATUS, ErrorCode

__all__ = ["ApiError", "install_error_handlers"]


class ApiError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(code: ErrorCode, message: str, status: int) -> JSONResponse:
    return JSONResponse({"code": code.value, "message": message}, status_code=status)


async def _api_error(_: Request, exc: ApiError) -> Response:
    return _error(exc.code, exc.message, HTTP_STATUS[exc.code])


async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return _error(ErrorCode.BAD_REQUEST, detail, 422)


async def _http_error(_: Request, exc: HTTPException) -> Response:
    code = ErrorCode.INTERNAL if exc.status_code >= 500 else ErrorCode.BAD_REQUEST
    return _error(code, str(exc.detail), exc.status_code)


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types handlers as taking any Exception; each of these is registered for its own.
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
