"""CUDA graphs of one TensorRT enqueue, captured and replayed through cuda-python as trtexec does.

The sequence is trtexec's (TensorRT samples/common/sampleInference.cpp and sampleDevice.h,
``TrtCudaGraph``): one ordinary enqueue first (TensorRT's deferred set-up must not be captured), a
stream synchronize, ``cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal)``, one enqueue,
``cudaStreamEndCapture``, ``cudaGraphInstantiate``, ``cudaGraphDestroy`` of the template graph; replay with
``cudaGraphLaunch`` on the same stream. Where capture fails, trtexec's ``endCaptureOnError`` ends the
capture, destroys a graph that was returned, clears the error with ``cudaGetLastError`` and goes on without a
graph: so does ``capture``.

Capture mode THREAD_LOCAL (``cuThreadExchangeStreamCaptureMode``): only the capturing thread is barred from
"potentially unsafe" calls such as ``cudaMalloc``; with GLOBAL, any other thread of the process (another
session being activated, PyTorch) that allocates during the capture would fail and invalidate it.

tensorrt-rtx captures its own graphs (``CudaGraphStrategy.WHOLE_GRAPH_CAPTURE``): this module serves full
TensorRT only.
"""

from typing import Callable, Optional, Union

CAPTURE_MODE = "CU_STREAM_CAPTURE_MODE_THREAD_LOCAL"  # trtexec's cudaStreamCaptureModeThreadLocal


def capture(driver, runtime, stream_handle: int, enqueue: Callable[[], bool],
            errors: Callable[[], str]) -> Union[object, str]:
    """The executable graph of ``enqueue()`` on the stream, or why capture failed (a short phrase).

    ``driver``, ``runtime``: ``cuda.bindings.driver`` and ``cuda.bindings.runtime``; ``enqueue`` runs
    ``execute_async_v3`` on the stream and returns its result; ``errors`` gives TensorRT's last errors. The
    stream must be idle (synchronized) and capture-free.
    """
    success = driver.CUresult.CUDA_SUCCESS
    stream = driver.CUstream(stream_handle)
    (error,) = driver.cuStreamBeginCapture(stream, getattr(driver.CUstreamCaptureMode, CAPTURE_MODE))
    if error != success:
        return error.name
    try:
        enqueued = enqueue()
    except BaseException:
        driver.cuStreamEndCapture(stream)  # leave the stream usable; the original error goes on
        clear_last_error(runtime)
        raise
    error, graph = driver.cuStreamEndCapture(stream)
    if not enqueued or error != success:
        # trtexec's endCaptureOnError: a graph returned with a failed enqueue must not be used
        if error == success:
            driver.cuGraphDestroy(graph)
        clear_last_error(runtime)
        return error.name if enqueued else errors()
    error, executable = driver.cuGraphInstantiate(graph, 0)
    driver.cuGraphDestroy(graph)  # the executable graph is all a launch needs
    if error != success:
        clear_last_error(runtime)
        return error.name
    return executable


def clear_last_error(runtime) -> None:
    """Reset the CUDA runtime's last error of this thread (``cudaGetLastError``: "Returns the last error ... and
    resets it to cudaSuccess"), as trtexec does after a failed capture: TensorRT calls the runtime API, and a
    capture error left behind would fail the next ordinary enqueue. The docstring's caveat holds: a library
    that links the CUDA runtime statically keeps an error state of its own, which this cannot reach."""
    runtime.cudaGetLastError()


def launch(driver, executable, stream_handle: int) -> Optional[str]:
    """Replay the graph on the stream (``cuGraphLaunch``); the error's name, or None."""
    (error,) = driver.cuGraphLaunch(executable, driver.CUstream(stream_handle))
    return None if error == driver.CUresult.CUDA_SUCCESS else error.name


def destroy(driver, executable) -> None:
    driver.cuGraphExecDestroy(executable)
